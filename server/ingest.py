"""Storing what clients send: runs, and batches of events stored exactly once per (run, seq)."""

import json
import math
import time
import uuid

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from .models import ENDED_STATUSES, ROLLUP_WIDTHS, Event, Project, Run
from .values import encode_number, json_safe, to_column

END_STATUSES = set(ENDED_STATUSES)


def insert_ignoring_conflicts(session, model, rows, index_elements):
    """INSERT rows, skipping those that collide on `index_elements` (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model).on_conflict_do_nothing(index_elements=index_elements)
    session.execute(statement, rows)


def get_or_create_project(session, name):
    insert_ignoring_conflicts(
        session, Project, [{"name": name, "created_at": time.time()}], ["name"]
    )
    return session.scalars(select(Project).where(Project.name == name)).one()


def automatic_run_name(now=None):
    """A readable default name such as `run-20261128-153012-3fa2`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"run-{stamp}-{uuid.uuid4().hex[:4]}"


def create_run(session, spec, source="client"):
    """Create the run `spec` describes, or return the existing one with its uid.

    Returns `(run, created)`.
    """
    if spec.uid:
        existing = session.scalars(select(Run).where(Run.uid == spec.uid)).one_or_none()
        if existing is not None:
            return existing, False
    now = time.time()
    project = get_or_create_project(session, spec.project)
    run = Run(
        uid=spec.uid or uuid.uuid4().hex,
        project_id=project.id,
        name=spec.name or automatic_run_name(now),
        status="running",
        source=source,
        config=json_safe(spec.config),
        tags=spec.tags,
        host=spec.host,
        versions=spec.versions,
        params={},
        summary={},
        epochs_done=0,
        last_seq=0,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():  # a savepoint: a lost race leaves the transaction usable
            session.add(run)
    except IntegrityError:
        # The same uid was created meanwhile by a concurrent request (or replica).
        existing = session.scalars(select(Run).where(Run.uid == run.uid)).one_or_none()
        if existing is None:
            raise
        return existing, False
    return run, True


def lock_run(session, run_id):
    """Load run `run_id` for update (row lock on PostgreSQL), or None."""
    return session.scalars(
        select(Run).where(Run.id == run_id).with_for_update(of=Run)
    ).one_or_none()


def ingest_events(session, run, events):
    """Store `events` (validated `EventIn`s) of a locked `run`; return `(accepted, duplicates)`.

    Events whose seq is already stored are skipped, so a retried batch is stored once.
    Rows go in through one multi-row statement per table; the run is updated once.
    """
    fresh = _fresh_events(session, run, events)
    now = time.time()
    if fresh:
        metrics = [_finite_names(event.metrics) for event in fresh]
        connection = session.connection()
        dialect = connection.dialect
        connection.exec_driver_sql(
            _statement(dialect, EVENT_INSERT, len(EVENT_COLUMNS)),
            [
                _event_row(run.id, event, named, now, dialect)
                for event, named in zip(fresh, metrics, strict=True)
            ],
        )
        points = [point for event in fresh for point in _metric_points(run.id, event, now)]
        if points:
            connection.exec_driver_sql(
                _statement(dialect, POINT_INSERT, len(POINT_COLUMNS)), points
            )
            rollups = rollup_rows(run.id, points)
            if rollups:
                connection.exec_driver_sql(_rollup_upsert(dialect), rollups)
        _apply_to_run(run, fresh, metrics, now)
    run.updated_at = now
    if fresh and run.status == "lost":
        run.status = "running"
    return len(fresh), len(events) - len(fresh)


def _fresh_events(session, run, events):
    """The events not stored yet, in seq order, each seq once.

    Every stored seq is at most `run.last_seq`, so a batch entirely above it
    (the usual case) needs no look-up.
    """
    seqs = [event.seq for event in events]
    if not seqs:
        return []
    if min(seqs) > (run.last_seq or 0):
        seen = set()
    else:
        seen = set(
            session.scalars(select(Event.seq).where(Event.run_id == run.id, Event.seq.in_(seqs)))
        )
    fresh = []
    for event in sorted(events, key=lambda e: e.seq):
        if event.seq not in seen:
            seen.add(event.seq)
            fresh.append(event)
    return fresh


EVENT_COLUMNS = ("run_id", "seq", "kind", "epoch", "step", "time", "received_at", "metrics", "data")
EVENT_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({{params}}) "
    "ON CONFLICT (run_id, seq) DO NOTHING"
)
POINT_COLUMNS = ("run_id", "key", "step", "epoch", "value", "time")
POINT_INSERT = f"INSERT INTO metric_points ({', '.join(POINT_COLUMNS)}) VALUES ({{params}})"


ROLLUP_COLUMNS = (
    "run_id",
    "key",
    "width",
    "bucket",
    "first_step",
    "last_step",
    "min_value",
    "max_value",
    "max_epoch",
    "max_time",
    "points",
)


def rollup_rows(run_id, points):
    """Rollup rows (in `ROLLUP_COLUMNS` order) summing up `points` at every width.

    `points` are metric_points rows `(run_id, key, step, epoch, value, time)`;
    NaN points (value None) are not rolled up. Each width is built from the
    finer one, so the cost is about one pass over the points.
    """
    level = {}
    first_width = ROLLUP_WIDTHS[0]
    for _run, key, step, epoch, value, when in points:
        if value is None:
            continue
        slot = (key, step // first_width)
        found = level.get(slot)
        if found is None:
            level[slot] = [step, step, value, value, epoch, when, 1]
        else:
            _merge(found, (step, step, value, value, epoch, when, 1))
    rows = []
    widths = list(ROLLUP_WIDTHS)
    for index, width in enumerate(widths):
        rows.extend(
            (run_id, key, width, bucket, *summary) for (key, bucket), summary in level.items()
        )
        if index + 1 == len(widths):
            break
        ratio = widths[index + 1] // width
        coarser = {}
        for (key, bucket), summary in level.items():
            slot = (key, bucket // ratio)
            found = coarser.get(slot)
            if found is None:
                coarser[slot] = list(summary)
            else:
                _merge(found, summary)
        level = coarser
    return rows


def _merge(into, other):
    """Fold rollup summary `other` into `into`: [first, last, min, max, epoch, time, points]."""
    first, last, lowest, highest, epoch, when, points = other
    if first < into[0]:
        into[0] = first
    if last > into[1]:
        into[1] = last
    if lowest < into[2]:
        into[2] = lowest
    if highest > into[3]:
        into[3] = highest
    if epoch is not None and (into[4] is None or epoch > into[4]):
        into[4] = epoch
    if when > into[5]:
        into[5] = when
    into[6] += points


def _rollup_upsert(dialect):
    table = "metric_rollups"
    if dialect.name == "postgresql":
        least, greatest = "LEAST", "GREATEST"  # both skip NULLs

        def latest_epoch(old, new):
            return f"GREATEST({old}, {new})"
    else:
        least, greatest = "MIN", "MAX"  # SQLite's scalar MIN/MAX return NULL on any NULL

        def latest_epoch(old, new):
            return f"COALESCE(MAX({old}, {new}), {old}, {new})"

    def old(column):
        return f"{table}.{column}"

    updates = {
        "first_step": f"{least}({old('first_step')}, excluded.first_step)",
        "last_step": f"{greatest}({old('last_step')}, excluded.last_step)",
        "min_value": f"{least}({old('min_value')}, excluded.min_value)",
        "max_value": f"{greatest}({old('max_value')}, excluded.max_value)",
        "max_epoch": latest_epoch(old("max_epoch"), "excluded.max_epoch"),
        "max_time": f"{greatest}({old('max_time')}, excluded.max_time)",
        "points": f"{old('points')} + excluded.points",
    }
    return _statement(
        dialect,
        f"INSERT INTO {table} ({', '.join(ROLLUP_COLUMNS)}) VALUES ({{params}}) "
        "ON CONFLICT (run_id, key, width, bucket) DO UPDATE SET "
        + ", ".join(f"{column} = {value}" for column, value in updates.items()),
        len(ROLLUP_COLUMNS),
    )


def _statement(dialect, template, columns):
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    return template.format(params=", ".join([marker] * columns))


def _finite_names(metrics):
    """`json_safe` for a validated `{key: float}`: non-finite values become their names."""
    if all(math.isfinite(value) for value in metrics.values()):
        return metrics
    return {key: encode_number(value) for key, value in metrics.items()}


def _event_row(run_id, event, metrics, now, dialect):
    dumps = dialect._json_serializer or json.dumps
    return (
        run_id,
        event.seq,
        event.kind,
        event.epoch,
        event.step,
        event.time if event.time is not None else now,
        now,
        dumps(metrics),
        dumps(json_safe(event.data)) if event.data else "{}",
    )


def point_step(event):
    """Epoch metrics are indexed by epoch; everything else by step (else epoch, else seq)."""
    if event.kind == "epoch_end" and event.epoch is not None:
        return event.epoch
    for candidate in (event.step, event.epoch):
        if candidate is not None:
            return candidate
    return event.seq


def _metric_points(run_id, event, now):
    step = point_step(event)
    when = event.time if event.time is not None else now
    epoch = event.epoch
    return [
        (run_id, key, step, epoch, to_column(value), when) for key, value in event.metrics.items()
    ]


def _apply_to_run(run, events, metrics, now):
    """Fold `events` into the run's counters, summary and status, in seq order."""
    summary = None
    last_seq = run.last_seq or 0
    last_step = run.last_step
    epochs_done = run.epochs_done or 0
    last_epoch = run.last_epoch
    for event, named in zip(events, metrics, strict=True):
        last_seq = max(last_seq, event.seq)
        if named:
            step = point_step(event)
            if summary is None:
                summary = dict(run.summary or {})
            for key, value in named.items():
                if key not in summary or summary[key][0] <= step:
                    summary[key] = [step, value]
        if event.step is not None:
            last_step = max(last_step or 0, event.step)
        kind = event.kind
        if kind == "epoch_end" and event.epoch is not None:
            epochs_done = max(epochs_done, event.epoch + 1)
            last_epoch = max(last_epoch if last_epoch is not None else -1, event.epoch)
        elif kind == "train_begin":
            run.params = json_safe(event.data)
            run.status = "running"
            run.ended_at = None
        elif kind == "train_end":
            _end_run(run, event.data, now)
    run.last_seq = last_seq
    if last_step != run.last_step:
        run.last_step = last_step
    if epochs_done != (run.epochs_done or 0):
        run.epochs_done = epochs_done
    if last_epoch != run.last_epoch:
        run.last_epoch = last_epoch
    if summary is not None:
        run.summary = summary


def _end_run(run, data, now):
    status = data.get("status") if data.get("status") in END_STATUSES else "finished"
    if run.stop_requested_at is not None and status != "failed":
        status = "stopped"
        run.stopped_at = now
    run.status = status
    run.ended_at = now
    if data.get("error"):
        run.error = str(data["error"])[:10_000]


def add_server_event(session, run, kind, data=None):
    """Record an event the server itself observed (stop requested, run lost, ...)."""
    now = time.time()
    session.add(
        Event(
            run_id=run.id,
            seq=None,
            kind=kind,
            epoch=run.last_epoch,
            step=run.last_step,
            time=now,
            received_at=now,
            metrics={},
            data=json_safe(data or {}),
        )
    )
