"""Remote control of a run: request a stop, poll the control state, acknowledge."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException

from ..control import StopRefused, acknowledge_stop, control_state, request_stop
from ..deps import (
    Controller,
    HubDep,
    PrincipalDep,
    RowId,
    RunDep,
    WriteSessionDep,
    lock_visible_run,
    require,
)
from ..live import RUNS_CHANNEL, run_channel
from ..schemas import StopRequest

router = APIRouter(prefix="/runs/{run_id}", tags=["control"])


@router.post("/stop")
def stop(
    run_id: RowId,
    session: WriteSessionDep,
    hub: HubDep,
    principal: Controller,
    request: Annotated[StopRequest | None, Body()] = None,
):
    """Ask the run to stop at its next batch; asking twice is harmless."""
    run = lock_visible_run(session, run_id, principal)
    try:
        request_stop(session, run, request.reason if request else None)
    except StopRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    session.commit()
    hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return control_state(run)


@router.get("/control", dependencies=[Depends(require("read", "ingest"))])
def read_control(run: RunDep):
    """What the training client polls: whether a stop was requested, and its state."""
    return control_state(run)


@router.post("/control/ack", dependencies=[Depends(require("ingest", "control"))])
def acknowledge(run_id: RowId, session: WriteSessionDep, hub: HubDep, principal: PrincipalDep):
    """The client saw the stop request and is stopping."""
    run = lock_visible_run(session, run_id, principal)
    if acknowledge_stop(session, run):
        session.commit()
        hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return control_state(run)
