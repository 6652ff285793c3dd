"""Remote control of a run: request a stop, poll the control state, acknowledge."""

import functools
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from callboard.server.api.answers import ControlState, problems
from callboard.server.api.deps import (
    Controller,
    PrincipalDep,
    RowId,
    RunWritesDep,
    SessionDep,
    check_project,
    check_run_visible,
    require,
)
from callboard.server.api.fast_path import authorize, documented_path, json_answer, row_id
from callboard.server.api.routes.commands import requester
from callboard.server.api.schemas import Name, StopRequest
from callboard.server.auth import Principal
from callboard.server.commands import acknowledge_stop_command, request_stop_command
from callboard.server.control import (
    StopRefused,
    control_state,
    newest_live_run,
    read_control_row,
)

router = APIRouter(tags=["control"])


@router.post(
    "/runs/{run_id}/stop",
    response_model=ControlState,
    responses=problems(401, 403, 404, 409, 413, 503),
)
async def stop(
    run_id: RowId,
    writes: RunWritesDep,
    principal: Controller,
    request: Annotated[StopRequest | None, Body()] = None,
):
    """Ask the run to stop at its next batch; asking twice is harmless.

    The first ask also issues a `stop` command (`POST /runs/{run_id}/commands`).
    """
    reason = request.reason if request else None
    work = functools.partial(
        request_stop_command,
        run_id=run_id,
        reason=reason,
        by=requester(principal),
        visible=principal.sees_project,
    )
    try:
        run = await writes.write(work, order=run_id)
    except StopRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return control_state(run)


@router.get(
    "/runs/{run_id}/control",
    responses={200: {"model": ControlState}, **problems(401, 403, 404, 429, 503)},
    openapi_extra=documented_path(),
)
async def read_control(request: Request):
    """What the training client polls: whether a stop was requested, and its state.

    Every training client asks once a second, so this is served lean (`lean`):
    one query on one worker thread, the same 401/403/404/422 answers.
    """
    principal = await authorize(request, "read", "ingest")
    run_id = row_id(request)
    run = await run_in_threadpool(read_control_row, request.app.state.database, run_id)
    check_run_visible(principal, run_id, run.project if run is not None else None)
    return json_answer(control_state(run))


@router.post(
    "/runs/{run_id}/control/ack",
    dependencies=[Depends(require("ingest", "control"))],
    response_model=ControlState,
    responses=problems(401, 403, 404, 429, 503),
)
async def acknowledge(run_id: RowId, writes: RunWritesDep, principal: PrincipalDep):
    """The client saw the stop request and is stopping: its `stop` commands are applied."""
    work = functools.partial(
        acknowledge_stop_command, run_id=run_id, visible=principal.sees_project
    )
    run = await writes.write(work, order=run_id)
    return control_state(run)


@router.get("/control", response_model=ControlState, responses=problems(401, 403, 404, 429, 503))
def read_control_by_name(
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("read", "ingest"))],
    name: Annotated[Name, Query(description="run name")],
    project: Annotated[Name, Query(description="project name")] = "default",
):
    """The control state of the newest live (running or lost) run called `name` in `project`.

    For `RemoteStop(run=NAME)` beside the stock `keras.callbacks.RemoteMonitor`,
    which never learns its run's id: ingest tokens may ask, as they may poll a
    run's control, and learn only the run's id and control state. 404 while no
    run of that name is live; 403 for a project outside the token's.
    """
    check_project(principal, project)
    run = newest_live_run(session, name, project)
    if run is None:
        raise HTTPException(
            status_code=404, detail=f"no live run named {name!r} in project {project!r}"
        )
    return control_state(run)
