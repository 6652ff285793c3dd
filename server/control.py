"""A run's stop state machine: none → requested → acknowledged → stopped."""

import time
from typing import NamedTuple

from sqlalchemy import bindparam, select

from callboard.server.store.models import ENDED_STATUSES, Project, Run
from callboard.server.store.run_writes import PROJECTS, RUNS, add_server_event, lock_run, update_run
from callboard.server.store.statements import compiled_once


class ControlRow(NamedTuple):
    """The run's columns a control answer needs, and its project's name."""

    id: int
    status: str
    stop_reason: str | None
    stop_requested_at: float | None
    stop_acknowledged_at: float | None
    stopped_at: float | None
    project: str


CONTROL_COLUMNS = (
    RUNS.c.id,
    RUNS.c.status,
    RUNS.c.stop_reason,
    RUNS.c.stop_requested_at,
    RUNS.c.stop_acknowledged_at,
    RUNS.c.stopped_at,
)


@compiled_once
def control_query():
    """Run `run_id`'s `ControlRow` (for `read_control_row`, straight on the driver)."""
    return (
        select(*CONTROL_COLUMNS, PROJECTS.c.name)
        .join_from(RUNS, PROJECTS, PROJECTS.c.id == RUNS.c.project_id)
        .where(RUNS.c.id == bindparam("run_id"))
    )


class StopRefused(Exception):
    """The run cannot be stopped (it has already ended)."""


def stop_state(run):
    """Where the run is in the stop state machine."""
    if run.stopped_at is not None:
        return "stopped"
    if run.stop_acknowledged_at is not None:
        return "acknowledged"
    if run.stop_requested_at is not None:
        return "requested"
    return "none"


def control_state(run):
    """The control answer clients poll: small, and cheap to compute."""
    return {
        "run_id": run.id,
        "status": run.status,
        "stop_requested": run.stop_requested_at is not None,
        "state": stop_state(run),
        "reason": run.stop_reason,
        "requested_at": run.stop_requested_at,
        "acknowledged_at": run.stop_acknowledged_at,
        "stopped_at": run.stopped_at,
    }


def read_control_row(database, run_id):
    """Run `run_id`'s `ControlRow`, or None: one statement straight on a pooled driver
    connection (SQLAlchemy's statement and result machinery cost more than the query)."""
    statement = control_query(database.engine.dialect)
    connection = database.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(statement.sql, statement.parameters({"run_id": run_id}))
        row = cursor.fetchone()
        cursor.close()
    finally:
        connection.close()
    return None if row is None else ControlRow(*row)


def newest_live_run(session, name, project):
    """The newest run called `name` in `project` that has not ended (running or lost), or None."""
    return session.scalars(
        select(Run)
        .join(Project, Project.id == Run.project_id)
        .where(Project.name == project, Run.name == name, Run.status.not_in(ENDED_STATUSES))
        .order_by(Run.id.desc())
        .limit(1)
    ).first()


def _locked_control_row(connection, run_id, visible):
    return ControlRow(*lock_run(connection, run_id, CONTROL_COLUMNS, visible))


def request_stop(connection, changed, run_id, reason=None, visible=None):
    """Ask run `run_id` to stop; return its `ControlRow`. Asking again changes nothing.

    Work for `RunWrites.write`. Refused (`StopRefused`) once the run has ended
    (finished, stopped or failed), whether or not a stop was asked before. A
    `lost` run may still come back, so it can be asked: its client sees the
    request when it polls again. `RunNotFound` unless `visible(project)`.
    """
    run = _locked_control_row(connection, run_id, visible)
    if run.status in ENDED_STATUSES:
        raise StopRefused(f"run {run_id} has already ended with status {run.status!r}")
    if run.stop_requested_at is not None:
        return run
    run = run._replace(stop_requested_at=time.time(), stop_reason=reason)
    update_run(connection, run_id, stop_requested_at=run.stop_requested_at, stop_reason=reason)
    add_server_event(connection, changed, run_id, "stop_requested", {"reason": reason})
    return run


def acknowledge_stop(connection, changed, run_id, visible=None):
    """The client has seen the stop request and is stopping `fit()`; return the `ControlRow`.

    Work for `RunWrites.write`; acknowledging twice, or with no stop requested,
    changes nothing. `RunNotFound` unless `visible(project)`.
    """
    run = _locked_control_row(connection, run_id, visible)
    if run.stop_requested_at is None or run.stop_acknowledged_at is not None:
        return run
    run = run._replace(stop_acknowledged_at=time.time())
    update_run(connection, run_id, stop_acknowledged_at=run.stop_acknowledged_at)
    add_server_event(connection, changed, run_id, "stop_acknowledged")
    return run
