"""Runs that went silent: clients that stopped sending are `lost`; stock-Keras runs ended."""

import time

from sqlalchemy import select
from sqlalchemy.orm import load_only

from callboard.server.store.ingest import add_server_event
from callboard.server.store.models import STOCK_SOURCES, Run

# The columns a sweep reads and writes.
SWEPT = (
    Run.status,
    Run.source,
    Run.updated_at,
    Run.ended_at,
    Run.stopped_at,
    Run.stop_acknowledged_at,
    Run.last_epoch,
    Run.last_step,
)


def mark_silent_runs(session, lost_after_seconds, now=None):
    """Mark running runs silent for `lost_after_seconds`; return their ids.

    Runs fed by our client send heartbeats, so silence means the process is
    gone: `lost`. Runs fed by the stock Keras RemoteMonitor have no heartbeat
    and no train-end post, so silence is how they end: `finished`, or `stopped`
    once a `RemoteStop` beside the stock callback acknowledged a stop.
    """
    now = time.time() if now is None else now
    silent = session.scalars(
        select(Run)
        .options(load_only(*SWEPT, raiseload=True))  # never a run's config: it may be megabytes
        .where(Run.status == "running", Run.updated_at < now - lost_after_seconds)
        .with_for_update(skip_locked=True, of=Run)
    ).all()
    for run in silent:
        if run.source in STOCK_SOURCES:
            run.status = "finished"
            run.ended_at = run.updated_at
            if run.stop_acknowledged_at is not None:
                run.status = "stopped"
                run.stopped_at = run.updated_at
        else:
            run.status = "lost"
            add_server_event(session, run, "lost", {"silent_seconds": round(now - run.updated_at)})
    return [run.id for run in silent]
