"""CSV export of a run's epochs, in the shape Keras's CSVLogger writes."""

import csv
import io

from sqlalchemy import select

from .models import Event
from .values import parse_number


def epoch_rows(session, run_id):
    """`{epoch: {metric: value}}` from the run's epoch-end events (later events win)."""
    rows = {}
    events = session.scalars(
        select(Event)
        .where(Event.run_id == run_id, Event.kind == "epoch_end")
        .order_by(Event.seq, Event.id)
    )
    for event in events:
        if event.epoch is not None:
            rows[event.epoch] = {k: parse_number(v) for k, v in (event.metrics or {}).items()}
    return rows


def epochs_csv(session, run_id):
    """CSV text like CSVLogger's: `epoch`, then the metric names sorted; "NA" where missing."""
    rows = epoch_rows(session, run_id)
    keys = sorted({key for metrics in rows.values() for key in metrics})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch", *keys])
    writer.writeheader()
    for epoch in sorted(rows):
        writer.writerow({"epoch": epoch, **{k: rows[epoch].get(k, "NA") for k in keys}})
    return out.getvalue()
