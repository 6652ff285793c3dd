"""A run's stop state machine: none → requested → acknowledged → stopped."""

import time
from typing import NamedTuple

from sqlalchemy import select

from callboard.server.store.ingest import add_server_event, param_marker
from callboard.server.store.models import ENDED_STATUSES, Project, Run


class ControlRow(NamedTuple):
    """The run's columns a control answer needs, and its project's name."""

    id: int
    status: str
    stop_reason: str | None
    stop_requested_at: float | None
    stop_acknowledged_at: float | None
    stopped_at: float | None
    project: str


CONTROL_QUERY = (
    "SELECT runs.id, runs.status, runs.stop_reason, runs.stop_requested_at, "
    "runs.stop_acknowledged_at, runs.stopped_at, projects.name "
    "FROM runs JOIN projects ON projects.id = runs.project_id WHERE runs.id = {}"
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
    connection = database.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(CONTROL_QUERY.format(param_marker(database.engine.dialect)), (run_id,))
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


def request_stop(session, run, reason=None):
    """Ask the run to stop; asking again changes nothing.

    Refused once the run has ended (finished, stopped or failed), whether or not
    a stop was asked before. A `lost` run may still come back, so it can be asked:
    its client sees the request when it polls again.
    """
    if run.status in ENDED_STATUSES:
        raise StopRefused(f"run {run.id} has already ended with status {run.status!r}")
    if run.stop_requested_at is not None:
        return False
    run.stop_requested_at = time.time()
    run.stop_reason = reason
    add_server_event(session, run, "stop_requested", {"reason": reason})
    return True


def acknowledge_stop(session, run):
    """The client has seen the stop request and is stopping `fit()`."""
    if run.stop_requested_at is None or run.stop_acknowledged_at is not None:
        return False
    run.stop_acknowledged_at = time.time()
    add_server_event(session, run, "stop_acknowledged")
    return True
