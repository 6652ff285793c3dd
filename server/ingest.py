"""Storing what clients send: runs, and batches of events stored exactly once per (run, seq)."""

import time
import uuid

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from .models import ENDED_STATUSES, Event, MetricPoint, Project, Run
from .values import json_safe, to_column

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
    session.add(run)
    session.flush()
    return run, True


def lock_run(session, run_id):
    """Load run `run_id` for update (row lock on PostgreSQL), or None."""
    return session.scalars(
        select(Run).where(Run.id == run_id).with_for_update(of=Run)
    ).one_or_none()


def ingest_events(session, run, events):
    """Store `events` (validated `EventIn`s) of a locked `run`; return `(accepted, duplicates)`.

    Events whose seq is already stored are skipped, so a retried batch is stored once.
    """
    seqs = [event.seq for event in events]
    stored = set(
        session.scalars(select(Event.seq).where(Event.run_id == run.id, Event.seq.in_(seqs)))
    )
    now = time.time()
    fresh, seen = [], set(stored)
    for event in sorted(events, key=lambda e: e.seq):
        if event.seq not in seen:
            seen.add(event.seq)
            fresh.append(event)
    insert_ignoring_conflicts(
        session, Event, [_event_row(run, event, now) for event in fresh], ["run_id", "seq"]
    )
    points = [point for event in fresh for point in _metric_points(run, event, now)]
    if points:
        session.execute(MetricPoint.__table__.insert(), points)
    for event in fresh:
        _apply_to_run(run, event, now)
    run.updated_at = now
    if fresh and run.status == "lost":
        run.status = "running"
    return len(fresh), len(events) - len(fresh)


def _event_row(run, event, now):
    return {
        "run_id": run.id,
        "seq": event.seq,
        "kind": event.kind,
        "epoch": event.epoch,
        "step": event.step,
        "time": event.time if event.time is not None else now,
        "received_at": now,
        "metrics": json_safe(event.metrics),
        "data": json_safe(event.data),
    }


def point_step(event):
    """Epoch metrics are indexed by epoch; everything else by step (else epoch, else seq)."""
    if event.kind == "epoch_end" and event.epoch is not None:
        return event.epoch
    for candidate in (event.step, event.epoch):
        if candidate is not None:
            return candidate
    return event.seq


def _metric_points(run, event, now):
    step = point_step(event)
    when = event.time if event.time is not None else now
    return [
        {
            "run_id": run.id,
            "key": key,
            "step": step,
            "epoch": event.epoch,
            "value": to_column(value),
            "time": when,
        }
        for key, value in event.metrics.items()
    ]


def _apply_to_run(run, event, now):
    run.last_seq = max(run.last_seq or 0, event.seq)
    if event.metrics:
        step = point_step(event)
        summary = dict(run.summary or {})
        for key, value in json_safe(event.metrics).items():
            if key not in summary or summary[key][0] <= step:
                summary[key] = [step, value]
        run.summary = summary
    if event.step is not None:
        run.last_step = max(run.last_step or 0, event.step)
    if event.kind == "epoch_end" and event.epoch is not None:
        run.epochs_done = max(run.epochs_done or 0, event.epoch + 1)
        run.last_epoch = max(run.last_epoch if run.last_epoch is not None else -1, event.epoch)
    elif event.kind == "train_begin":
        run.params = json_safe(event.data)
        run.status = "running"
        run.ended_at = None
    elif event.kind == "train_end":
        _end_run(run, event.data, now)


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
