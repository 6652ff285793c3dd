"""Runs that went silent: clients that stopped sending are `lost`; stock-Keras runs ended.

Heartbeats keep a client's run alive (a `paused` one too: its training waits,
its heartbeats go on), and bring a `lost` one back.
"""

import time

from sqlalchemy import select

from callboard.server.commands import status_on_return
from callboard.server.store.models import STOCK_SOURCES
from callboard.server.store.run_writes import RUNS, add_server_event, lock_run, update_run

# The columns a sweep reads (never a run's config: it may be megabytes).
SWEPT = (RUNS.c.id, RUNS.c.source, RUNS.c.updated_at, RUNS.c.stop_acknowledged_at)
# The statuses of runs whose client is expected to keep sending (events or heartbeats).
HEARD_STATUSES = ("running", "paused")
# Runs one sweep marks at most: each batch is one short write, so thousands of runs gone
# silent at once (a cluster restart) never hold the writer for seconds.
SWEEP_BATCH = 200


def mark_silent_runs(connection, changed, lost_after_seconds, now=None, limit=SWEEP_BATCH):
    """Mark up to `limit` running (or paused) runs silent for `lost_after_seconds`; return
    their ids (as many as `limit`: sweep again, more may be silent).

    Work for `RunWrites.write`. Runs fed by our client send heartbeats, so
    silence means the process is gone: `lost`. Runs fed by the stock Keras
    RemoteMonitor have no heartbeat and no train-end post, so silence is how
    they end: `finished`, or `stopped` once a `RemoteStop` beside the stock
    callback acknowledged a stop.
    """
    now = time.time() if now is None else now
    silent = connection.execute(
        select(*SWEPT)
        .where(RUNS.c.status.in_(HEARD_STATUSES), RUNS.c.updated_at < now - lost_after_seconds)
        .limit(limit)
        .with_for_update(skip_locked=True, of=RUNS)
    ).all()
    for run in silent:
        if run.source not in STOCK_SOURCES:
            update_run(connection, run.id, status="lost")
            quiet = {"silent_seconds": round(now - run.updated_at)}
            add_server_event(connection, changed, run.id, "lost", quiet)
        elif run.stop_acknowledged_at is not None:
            ended = run.updated_at
            update_run(connection, run.id, status="stopped", ended_at=ended, stopped_at=ended)
        else:
            update_run(connection, run.id, status="finished", ended_at=run.updated_at)
        changed.add(run.id)
    return [run.id for run in silent]


def record_heartbeat(connection, changed, run_id, visible=None):
    """The client of run `run_id` is alive: a `lost` run becomes `running` (or `paused`, when
    a pause was its last applied command: `commands.status_on_return`); return the status.

    Work for `RunWrites.write`; only a revived run is published.
    `RunNotFound` unless `visible(project)`.
    """
    run = lock_run(connection, run_id, (RUNS.c.status,), visible)
    status = status_on_return(connection, run_id) if run.status == "lost" else run.status
    update_run(connection, run_id, updated_at=time.time(), status=status)
    if status != run.status:
        changed.add(run_id)
    return status
