"""The JSON shapes of runs and events, as the REST API returns them."""

from sqlalchemy.orm import defer

from callboard.server.control import control_state
from callboard.server.store.models import Run

# What `run_summary` never reads, left in the database when listing runs: a run's
# config may be megabytes, and a list of 1,000 runs must not load them all.
SUMMARY_ONLY = (defer(Run.config), defer(Run.versions))


def last_values(run):
    """`{metric: last value}` from the run's summary."""
    return {key: value for key, (_step, value) in sorted((run.summary or {}).items())}


def run_summary(run):
    """A run as the runs list shows it."""
    return {
        "id": run.id,
        "uid": run.uid,
        "name": run.name,
        "project": run.project.name,
        "status": run.status,
        "source": run.source,
        "tags": run.tags or [],
        "host": run.host,
        "epochs_done": run.epochs_done,
        "epochs": (run.params or {}).get("epochs"),
        "last": last_values(run),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "ended_at": run.ended_at,
        "stop": control_state(run)["state"],
    }


def run_detail(run):
    """A run with everything the run page needs."""
    return {
        **run_summary(run),
        "config": run.config or {},
        "versions": run.versions or {},
        "params": run.params or {},
        "metrics": sorted((run.summary or {}).keys()),
        "last_epoch": run.last_epoch,
        "last_step": run.last_step,
        "error": run.error,
        "control": control_state(run),
    }


def event_view(event):
    return {
        "id": event.id,
        "seq": event.seq,
        "kind": event.kind,
        "epoch": event.epoch,
        "step": event.step,
        "time": event.time,
        "received_at": event.received_at,
        "metrics": event.metrics or {},
        "data": event.data or {},
    }
