"""What the stock `keras.callbacks.RemoteMonitor` posts, read into an epoch of a run."""

import json
from urllib.parse import parse_qs

from sqlalchemy import select

from callboard.server.api.schemas import MAX_KEY_LENGTH, MAX_KEYS_PER_EVENT, EventIn, RunCreate
from callboard.server.stock_runs import StockClient, clash_messages, continued_run
from callboard.server.store.ingest import (
    add_server_event,
    automatic_run_name,
    create_run,
    get_or_create_project,
    ingest_events,
)
from callboard.server.store.models import ENDED_STATUSES, STOCK_SOURCES, Event, Project, Run
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
    session, epoch, metrics, run_name=None, project="default", client=None, dropped=()
):
    """Store one stock-RemoteMonitor epoch; return the run it went to.

    Posts go to a live stock-fed run of that name (or an unnamed one) that the
    same `client` (a `StockClient`) started, as `stock_runs.continued_run`
    picks it; a new run of that name starts when the epoch counter falls back,
    the client differs, or the run ended. A run started while another of its
    name is live gets a warning event, and so does the other. Metric names in
    `dropped` (left out of `metrics`) get a warning on the run, once per name.
    """
    client = client or StockClient()
    project_row = get_or_create_project(session, project)
    session.scalars(select(Project).where(Project.id == project_row.id).with_for_update()).one()
    source = NAMED if run_name else AUTOMATIC
    query = select(Run).where(
        Run.project_id == project_row.id,
        Run.source == source,
        Run.status.not_in(ENDED_STATUSES),
    )
    if run_name:
        query = query.where(Run.name == run_name)
    live = session.scalars(
        query.order_by(Run.id.desc()).limit(MAX_LIVE_RUNS).with_for_update(of=Run)
    ).all()
    run = continued_run(live, epoch, client)
    started = run is None
    if started:
        spec = RunCreate(
            name=run_name or automatic_run_name(), project=project, **client.run_fields()
        )
        run, _ = create_run(session, spec, source=source)
    event = EventIn(seq=run.last_seq + 1, kind="epoch_end", epoch=epoch, metrics=metrics)
    ingest_events(session, run, [event])
    if started and live:
        _warn_clash(session, run, live, run_name, client)
    warn_dropped_metrics(session, run, dropped)
    return run


def warn_dropped_metrics(session, run, dropped):
    """A `warning` event naming the metrics left out of the run, once per name."""
    if not dropped:
        return
    warned = set()
    for data in session.scalars(
        select(Event.data).where(Event.run_id == run.id, Event.kind == "warning")
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
    add_server_event(
        session, run, "warning", {"message": message, "dropped": new[:MAX_KEYS_PER_EVENT]}
    )


def _warn_clash(session, new_run, live, run_name, client):
    """Warn in `new_run` and the live run it was kept apart from (the client's own, if any)."""
    other = next((run for run in live if client.started(run)), live[0])
    label = f"?run={run_name}" if run_name else "an unnamed run"
    to_new, to_other = clash_messages(label, new_run, other, client)
    add_server_event(session, new_run, "warning", {"message": to_new, "other_run": other.id})
    add_server_event(session, other, "warning", {"message": to_other, "other_run": new_run.id})
