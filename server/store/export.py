"""CSV export of a run's epochs, in the shape Keras's CSVLogger writes."""

import csv
import io

from sqlalchemy import select

from callboard.server.store.models import Event
from callboard.server.store.storable import parse_number


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


# A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV Injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """`cell`, with a text cell that a spreadsheet would run as a formula prefixed by `'`.

    Numbers stay numbers, negative ones included.

    Example:
        >>> spreadsheet_safe("=1+2"), spreadsheet_safe(-0.5)
        ("'=1+2", -0.5)
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def epochs_csv(session, run_id):
    """CSV text like CSVLogger's: `epoch`, then the metric names sorted; "NA" where missing.

    Text cells are quoted (a `;`-separated reader cannot split them) and made
    `spreadsheet_safe`, so a metric name never runs as a formula.
    """
    rows = epoch_rows(session, run_id)
    keys = sorted({key for metrics in rows.values() for key in metrics})
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow([spreadsheet_safe(name) for name in ["epoch", *keys]])
    for epoch in sorted(rows):
        cells = [epoch, *(rows[epoch].get(key, "NA") for key in keys)]
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
    return out.getvalue()
