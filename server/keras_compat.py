"""What the stock `keras.callbacks.RemoteMonitor` posts, read into an epoch of a run."""

import json
from urllib.parse import parse_qs

from sqlalchemy import select

from callboard.server.api.schemas import MAX_KEY_LENGTH, MAX_KEYS_PER_EVENT, EventIn, RunCreate
from callboard.server.stock_runs import StockClient, clash_messages, continued_run
from callboard.server.store.ingest import store_events
from callboard.server.store.models import ENDED_STATUSES, STOCK_SOURCES
from callboard.server.store.run_writes import (
    EVENTS,
    RUNS,
    add_server_event,
    automatic_run_name,
    create_run,
    get_or_create_project,
)
from callboard.server.store.storable import json_safe, parse_number

NAMED, AUTOMATIC = STOCK_SOURCES
MAX_EPOCH = 2**31 - 1  # epochs are INTEGER columns
MAX_LIVE_RUNS = 20  # live runs of one name looked at for the one a post continues


class BadPost(ValueError):
    """The body is not an epoch as the stock RemoteMonitor sends it."""


def parse_epoch_post(body):
    """Return `(epoch, metrics)` from a stock RemoteMonitor body, form or JSON.

    The body is sniffed, not trusted to match its Content-Type. Bare `NaN`,
    `Infinity` and `-Infinity` tokens are kept. Metric names are as sent:
    `schemas.keep_valid_metrics` sorts out those an event may not hold.

    Example:
        >>> parse_epoch_post(b'data=%7B%22epoch%22%3A+0%2C+%22loss%22%3A+NaN%7D')
        (0, {'loss': nan})
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPost("body is not UTF-8 text") from exc
    if not text.strip():
        raise BadPost('empty body: expected a JSON object such as {"epoch": 0, "loss": 0.5}')
    looks_like_json = text.lstrip()[0] in "{["
    payload = _load_json(text if looks_like_json else _form_value(text))
    if not isinstance(payload, dict):
        raise BadPost("expected a JSON object of an epoch's logs")
    epoch = payload.pop("epoch", None)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        raise BadPost(f"'epoch' must be an integer from 0 to {MAX_EPOCH}, got {epoch!r}")
    metrics = {}
    for key, value in payload.items():
        try:
            metrics[key] = parse_number(value)
        except ValueError as exc:
            raise BadPost(f"metric {key!r} {exc}") from None
    return epoch, metrics


def _form_value(text):
    try:
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise BadPost("body is neither JSON nor a form with one JSON field") from exc
    if "data" in fields:
        return fields["data"][-1]
    if len(fields) != 1:
        raise BadPost(f"expected one form field holding the JSON, got {sorted(fields)}")
    return next(iter(fields.values()))[-1]


def _load_json(text):
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise BadPost(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise BadPost("invalid JSON: nested too deeply") from None


def record_epoch(
    connection,
    changed,
    epoch,
    metrics,
    run_name=None,
    project="default",
    client=None,
    dropped=(),
):
    """Store one stock-RemoteMonitor epoch; return the id of the run it went to.

    Work for `RunWrites.write`. Posts go to a live stock-fed run of that name
    (or an unnamed one) that the same `client` (a `StockClient`) started, as
    `stock_runs.continued_run` picks it; a new run of that name starts when the
    epoch counter falls back, the client differs, or the run ended. A run
    started while another of its name is live gets a warning event, and so
    does the other. Metric names in `dropped` (left out of `metrics`) get a
    warning on the run, once per name.
    """
    client = client or StockClient()
    project_id = get_or_create_project(connection, project, lock=True)
    source = NAMED if run_name else AUTOMATIC
    query = select(RUNS.c.id, RUNS.c.last_epoch, RUNS.c.last_seq, RUNS.c.host, RUNS.c.versions)
    query = query.where(
        RUNS.c.project_id == project_id,
        RUNS.c.source == source,
        RUNS.c.status.not_in(ENDED_STATUSES),
    )
    if run_name:
        query = query.where(RUNS.c.name == run_name)
    live = connection.execute(
        query.order_by(RUNS.c.id.desc()).limit(MAX_LIVE_RUNS).with_for_update(of=RUNS)
    ).all()
    run = continued_run(live, epoch, client)
    if run is None:
        spec = RunCreate(
            name=run_name or automatic_run_name(), project=project, **client.run_fields()
        )
        run_id, last_seq = create_run(connection, changed, spec, source=source)[0], 0
    else:
        run_id, last_seq = run.id, run.last_seq
    event = EventIn(seq=last_seq + 1, kind="epoch_end", epoch=epoch, metrics=metrics)
    store_events(connection, run_id, [event])
    changed.add(run_id)
    if run is None and live:
        _warn_clash(connection, changed, run_id, live, run_name, client)
    warn_dropped_metrics(connection, changed, run_id, dropped)
    return run_id


def warn_dropped_metrics(connection, changed, run_id, dropped):
    """A `warning` event naming the metrics left out of the run, once per name."""
    if not dropped:
        return
    warned = set()
    for data in connection.scalars(
        select(EVENTS.c.data).where(EVENTS.c.run_id == run_id, EVENTS.c.kind == "warning")
    ):
        warned.update((data or {}).get("dropped", ()))
    new = [key for key in dict.fromkeys(json_safe(list(dropped))) if key not in warned]
    if not new:
        return
    shown = ", ".join(repr(key[:60]) for key in new[:5]) + (", ..." if len(new) > 5 else "")
    message = (
        f"dropped {len(new)} metric(s): {shown}. A metric name is 1 to {MAX_KEY_LENGTH} "
        f"characters, no control character, and an epoch holds at most {MAX_KEYS_PER_EVENT}"
    )
    data = {"message": message, "dropped": new[:MAX_KEYS_PER_EVENT]}
    add_server_event(connection, changed, run_id, "warning", data)


def _warn_clash(connection, changed, new_run_id, live, run_name, client):
    """Warn in the new run and the live run it was kept apart from (the client's own, if any)."""
    other = next((run for run in live if client.started(run)), live[0])
    label = f"?run={run_name}" if run_name else "an unnamed run"
    to_new, to_other = clash_messages(label, new_run_id, other, client)
    add_server_event(
        connection, changed, new_run_id, "warning", {"message": to_new, "other_run": other.id}
    )
    add_server_event(
        connection, changed, other.id, "warning", {"message": to_other, "other_run": new_run_id}
    )
