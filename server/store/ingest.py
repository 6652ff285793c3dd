"""Storing what clients send: batches of events, stored exactly once per (run, seq)."""

import math
import time
from dataclasses import dataclass

from sqlalchemy import JSON, bindparam, select, update

from callboard.server.store.bulk_insert import BulkInsert
from callboard.server.store.db import json_dumps, json_loads
from callboard.server.store.models import ENDED_STATUSES, Event, MetricPoint, Project, Run
from callboard.server.store.rollups import ROLLUPS, rollup_rows
from callboard.server.store.statements import compiled_once
from callboard.server.store.storable import encode_number

END_STATUSES = set(ENDED_STATUSES)


class RunNotFound(LookupError):
    """The run does not exist, or the caller may not see it."""


@dataclass
class Stored:
    """What `store_events` did: events accepted, duplicates skipped, the run's status after."""

    accepted: int
    duplicates: int
    status: str


# The run's columns that ingest reads and may change, in the order `_load_run` selects them.
RUN_COLUMNS = (
    Run.status,
    Run.last_seq,
    Run.last_step,
    Run.epochs_done,
    Run.last_epoch,
    Run.summary,
    Run.params,
    Run.stop_requested_at,
    Run.ended_at,
    Run.stopped_at,
    Run.error,
    Run.updated_at,
    Run.last_event_at,
)
RUN_STATE = tuple(column.key for column in RUN_COLUMNS)
JSON_STATE = frozenset(column.key for column in RUN_COLUMNS if isinstance(column.type, JSON))


def store_events(connection, run_id, events, visible=None):
    """Store `events` (validated `EventIn`s) of run `run_id` on `connection`; return a `Stored`.

    The run's row is locked (PostgreSQL) for the rest of the transaction.
    Events whose seq is already stored are skipped, so a retried batch is
    stored once. Rows go in through one statement per table, straight on the
    driver's cursor, and the run's row is updated once. Raises `RunNotFound`
    when the run is missing or `visible(project_name)` is false; nothing is
    written then.
    """
    dialect = connection.dialect
    cursor = connection.connection.cursor()
    try:
        run, project = _load_run(cursor, dialect, run_id)
        if run is None or (visible is not None and not visible(project)):
            raise RunNotFound(run_id)
        before = dict(run)
        fresh = _fresh_events(cursor, dialect, run_id, run["last_seq"] or 0, events)
        now = time.time()
        if fresh:
            _insert_events(cursor, dialect, run_id, fresh, now)
            _apply_to_run(run, fresh, now)
            if not all(map(system_sample, fresh)):  # a live sampler is no sign of training
                run["last_event_at"] = now
            if run["status"] == "lost":
                run["status"] = "running"
        run["updated_at"] = now
        _update_run(cursor, dialect, run_id, before, run)
    finally:
        cursor.close()
    return Stored(len(fresh), len(events) - len(fresh), run["status"])


@compiled_once
def _run_state_query():
    return (
        select(*RUN_COLUMNS, Project.name)
        .join_from(Run, Project, Project.id == Run.project_id)
        .where(Run.id == bindparam("run_id"))
        .with_for_update(of=Run)  # PostgreSQL; SQLite has no row locks
    )


@compiled_once
def _run_update(names):
    values = {name: bindparam(name) for name in names}
    return update(Run).where(Run.id == bindparam("run_id")).values(values)


SEQS_PER_QUERY = 512


@compiled_once
def _stored_seqs_query(count):
    seqs = [bindparam(f"seq_{index}") for index in range(count)]
    return select(Event.seq).where(Event.run_id == bindparam("run_id"), Event.seq.in_(seqs))


def _load_run(cursor, dialect, run_id):
    """The run's `RUN_STATE` as a dict and its project's name, or `(None, None)`."""
    cursor.execute(_run_state_query(dialect).sql, (run_id,))
    row = cursor.fetchone()
    if row is None:
        return None, None
    run = dict(zip(RUN_STATE, row, strict=False))
    for name in JSON_STATE:
        if isinstance(run[name], str | bytes):
            run[name] = json_loads(run[name])
    return run, row[-1]


def _update_run(cursor, dialect, run_id, before, after):
    """UPDATE the run's columns that changed from `before` to `after`."""
    changed = tuple(name for name in RUN_STATE if after[name] != before[name])
    if not changed:
        return
    values = {n: json_dumps(after[n]) if n in JSON_STATE else after[n] for n in changed}
    statement = _run_update(dialect, changed)
    cursor.execute(statement.sql, statement.parameters({**values, "run_id": run_id}))


def _fresh_events(cursor, dialect, run_id, last_seq, events):
    """The events not stored yet, in seq order, each seq once.

    Every stored seq is at most the run's `last_seq`, so a batch entirely above
    it (the usual case) needs no look-up.
    """
    if not events:
        return []
    if min(event.seq for event in events) > last_seq:
        seen = set()
    else:
        seqs = sorted({event.seq for event in events if event.seq <= last_seq})
        seen = set()
        for start in range(0, len(seqs), SEQS_PER_QUERY):
            chunk = seqs[start : start + SEQS_PER_QUERY]
            count = 1 << (len(chunk) - 1).bit_length()  # padded: a few statements for any count
            padding = chunk[-1:] * (count - len(chunk))
            statement = _stored_seqs_query(dialect, count)
            cursor.execute(statement.sql, (run_id, *chunk, *padding))  # in the query's order
            seen.update(seq for (seq,) in cursor.fetchall())
    fresh = []
    ordered = events if _ascending(events) else sorted(events, key=lambda e: e.seq)
    for event in ordered:
        if event.seq not in seen:
            seen.add(event.seq)
            fresh.append(event)
    return fresh


def _ascending(events):
    return all(a.seq < b.seq for a, b in zip(events, events[1:], strict=False))


def _insert_events(cursor, dialect, run_id, events, now):
    """The events' rows, their metric points and the points' rollups.

    Each row is a tuple in the order of its table's `BulkInsert.columns`.
    """
    rows = []
    points = []
    add_point = points.append
    for event in events:
        when = event.time if event.time is not None else now
        metrics = event.metrics
        rows.append(
            (
                run_id,
                event.seq,
                event.kind,
                event.epoch,
                event.step,
                when,
                now,
                json_dumps(_finite_names(metrics)) if metrics else "{}",
                json_dumps(event.data) if event.data else "{}",
            )
        )
        if metrics:
            step = point_step(event)
            epoch = event.epoch
            for key, value in metrics.items():
                add_point((run_id, key, step, epoch, None if value != value else value, when))
    EVENTS.insert(cursor, dialect, rows)
    if points:
        POINTS.insert(cursor, dialect, points)
        ROLLUPS.insert(cursor, dialect, rollup_rows(run_id, points))


def _once_per_seq(insert, _dialect_name):
    return insert.on_conflict_do_nothing(index_elements=[Event.run_id, Event.seq])


EVENTS = BulkInsert(Event.__table__, on_conflict=_once_per_seq)
POINTS = BulkInsert(MetricPoint.__table__)


def _finite_names(metrics):
    """`json_safe` for a validated `{key: float}`: non-finite values become their names."""
    if math.isfinite(sum(metrics.values())):  # any NaN or infinity makes the sum non-finite
        return metrics
    return {key: encode_number(value) for key, value in metrics.items()}


def system_sample(event):
    """True for the client's machine samples (`system/...` metrics only): they say the process
    lives, not that training moves, so they set neither the run's last step nor its last event.
    """
    metrics = event.metrics
    return (
        event.kind == "metrics"
        and bool(metrics)
        and all(key.startswith("system/") for key in metrics)
    )


def point_step(event):
    """Epoch metrics are indexed by epoch; everything else by step (else epoch, else seq)."""
    if event.kind == "epoch_end" and event.epoch is not None:
        return event.epoch
    for candidate in (event.step, event.epoch):
        if candidate is not None:
            return candidate
    return event.seq


def _apply_to_run(run, events, now):
    """Fold `events` into the run's counters, summary and status (a `RUN_STATE` dict)."""
    last_seq = run["last_seq"] or 0
    last_step = run["last_step"]
    epochs_done = run["epochs_done"] or 0
    last_epoch = run["last_epoch"]
    steps, values = {}, {}  # each key's latest point in `events`: a later one wins a tie
    in_step_order, previous = True, None
    for event in events:
        if event.seq > last_seq:
            last_seq = event.seq
        metrics = event.metrics
        if metrics:
            step = point_step(event)
            in_step_order = in_step_order and (previous is None or previous <= step)
            previous = step
            if in_step_order:  # the usual case: the last event holding a key has its latest
                steps.update(dict.fromkeys(metrics, step))
                values.update(metrics)
            else:
                for key, value in metrics.items():
                    if steps.get(key, step) <= step:
                        steps[key], values[key] = step, value
        if event.step is not None and not system_sample(event):
            last_step = max(last_step or 0, event.step)
        kind = event.kind
        if kind == "epoch_end" and event.epoch is not None:
            epochs_done = max(epochs_done, event.epoch + 1)
            last_epoch = max(last_epoch if last_epoch is not None else -1, event.epoch)
        elif kind == "train_begin":
            run["params"] = event.data
            run["status"] = "running"
            run["ended_at"] = None
        elif kind == "train_end":
            _end_run(run, event.data, now)
    for name, value in (
        ("last_seq", last_seq),
        ("last_step", last_step),
        ("epochs_done", epochs_done),
        ("last_epoch", last_epoch),
    ):
        if value != run[name]:
            run[name] = value
    if steps:
        run["summary"] = _updated_summary(run["summary"], steps, values)


def _updated_summary(summary, steps, values):
    """The run's summary (`{key: [step, last value]}`) with newer points of `steps` / `values`."""
    summary = dict(summary or {})
    for key, step in steps.items():
        found = summary.get(key)
        if found is None or found[0] <= step:
            value = values[key]
            summary[key] = [step, value if math.isfinite(value) else encode_number(value)]
    return summary


def _end_run(run, data, now):
    status = data.get("status")
    if not isinstance(status, str) or status not in END_STATUSES:  # a list would not hash
        status = "finished"
    if run["stop_requested_at"] is not None and status != "failed":
        status = "stopped"
        run["stopped_at"] = now
    run["status"] = status
    run["ended_at"] = now
    if data.get("error"):
        run["error"] = str(data["error"])[:10_000]
