"""Remote control of a run: request a stop, poll the control state, acknowledge."""

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException

from ..control import StopRefused, acknowledge_stop, control_state, request_stop
from ..deps import HubDep, RunDep, WriteSessionDep
from ..ingest import lock_run
from ..live import RUNS_CHANNEL, run_channel
from ..schemas import StopRequest

router = APIRouter(prefix="/runs/{run_id}", tags=["control"])


def _locked(session, run_id):
    run = lock_run(session, run_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    return run


@router.post("/stop")
def stop(
    run_id: int,
    session: WriteSessionDep,
    hub: HubDep,
    request: Annotated[StopRequest | None, Body()] = None,
):
    """Ask the run to stop at its next batch; asking twice is harmless."""
    run = _locked(session, run_id)
    try:
        request_stop(session, run, request.reason if request else None)
    except StopRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    session.commit()
    hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return control_state(run)


@router.get("/control")
def read_control(run: RunDep):
    """What the training client polls: whether a stop was requested, and its state."""
    return control_state(run)


@router.post("/control/ack")
def acknowledge(run_id: int, session: WriteSessionDep, hub: HubDep):
    """The client saw the stop request and is stopping."""
    run = _locked(session, run_id)
    if acknowledge_stop(session, run):
        session.commit()
        hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return control_state(run)
