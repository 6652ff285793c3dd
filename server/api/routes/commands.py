"""Remote commands: issue, list and cancel them; the training's long-poll and its outcomes.

The training's background thread holds one `GET .../commands/pending` at a
time: it answers at once when a command waits, else when one is issued (the
run's `hub.commands_channel`, across replicas on PostgreSQL), else after
`wait` seconds, empty. No database connection is held while it waits.
"""

import functools
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from callboard.server.api.answers import problems
from callboard.server.api.command_answers import (
    Command,
    CommandList,
    command_answer,
    command_list,
)
from callboard.server.api.deps import (
    DatabaseDep,
    HubDep,
    RowId,
    RunWritesDep,
    SessionDep,
    check_run_visible,
    require,
    still_admitted,
)
from callboard.server.api.long_poll import change_or_hang_up
from callboard.server.api.schemas import MAX_ROW_ID, CommandIn, OutcomeIn
from callboard.server.auth import OPEN, Principal
from callboard.server.commands import (
    CommandConflict,
    CommandNotFound,
    CommandRefused,
    cancel_command,
    deliver_commands,
    issue_command,
    read_commands,
    read_pending,
    settle_command,
)
from callboard.server.live.hub import commands_channel
from callboard.server.store.models import Project, Run

router = APIRouter(tags=["commands"])

MAX_WAIT_SECONDS = 30.0
DEFAULT_WAIT_SECONDS = 25.0
# Command ids are INTEGER, as runs': a larger cursor would be refused by PostgreSQL (a 500).
CommandCursor = Annotated[
    int, Query(ge=0, le=MAX_ROW_ID, description="the command id to start after (0: all)")
]
WaitSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        allow_inf_nan=False,
        description="seconds to wait for a command when none is pending",
    ),
]


def requester(principal):
    """Who issued a command, as stored: the token's (or session's) name, or "open mode"."""
    return "open mode" if principal == OPEN else principal.name


def check_visible(session, run_id, principal):
    """`deps.check_run_visible` reading only the run's project name (not its config)."""
    project = session.execute(
        select(Project.name).join(Run, Run.project_id == Project.id).where(Run.id == run_id)
    ).scalar()
    check_run_visible(principal, run_id, project)


def run_caller(*scopes):
    """A dependency: the caller, once it holds one of `scopes` (401/403) and sees the run
    (404), checked before any body is read: another project's run is a 404, whatever is sent.
    """
    admitted = require(*scopes)

    def check(
        run_id: RowId, database: DatabaseDep, principal: Annotated[Principal, Depends(admitted)]
    ) -> Principal:
        with database.reader() as session:
            check_visible(session, run_id, principal)
        return principal

    return check


Issuer = Annotated[Principal, Depends(run_caller("control"))]
Trainer = Annotated[Principal, Depends(run_caller("ingest"))]


async def _write(writes, work, run_id):
    """`writes.write(work)`, with the commands' refusals as 404 and 409 answers."""
    try:
        return await writes.write(work, order=run_id)
    except (CommandRefused, CommandConflict) as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except CommandNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


@router.post(
    "/runs/{run_id}/commands",
    status_code=201,
    response_model=Command,
    responses=problems(401, 403, 404, 409, 413, 503),
)
async def issue(run_id: RowId, command: CommandIn, writes: RunWritesDep, principal: Issuer):
    """Send the run's training a command (`stop`, `pause`, `set_learning_rate`, ...).

    409 once the run has ended. `stop` also requests the stop, as `POST /stop` does.
    """
    work = functools.partial(
        issue_command,
        run_id=run_id,
        kind=command.kind,
        value=command.value,
        reason=command.reason,
        by=requester(principal),
        visible=principal.sees_project,
    )
    return command_answer(await _write(writes, work, run_id))


@router.get(
    "/runs/{run_id}/commands",
    response_model=CommandList,
    responses=problems(401, 403, 404, 429, 503),
)
def list_commands(
    run_id: RowId,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("read", "ingest"))],
):
    """Every command of the run, oldest first."""
    check_visible(session, run_id, principal)
    return command_list(read_commands(session.connection(), run_id))


def _read_pending(database, run_id, after, principal=None):
    """The run's pending commands; with `principal`, once it is seen to see the run (404)."""
    with database.reader() as session:
        if principal is not None:
            check_visible(session, run_id, principal)
        return read_pending(session.connection(), run_id, after)


async def _wait_for_pending(request, subscription, database, run_id, principal, after, wait):
    """The run's pending commands after `after`, waiting up to `wait` s for one; None once
    the client has gone. 404 unless `principal` sees the run; 401 once the caller's
    credential no longer admits it."""
    deadline = time.monotonic() + wait
    pending = await run_in_threadpool(_read_pending, database, run_id, after, principal)
    while not pending and (left := deadline - time.monotonic()) > 0:
        woken = await change_or_hang_up(request, subscription, left)
        if woken is None:
            return None
        if not await still_admitted(request, "ingest"):
            raise HTTPException(
                status_code=401,
                detail="this token was revoked, or no longer admits its caller",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if woken:
            pending = await run_in_threadpool(_read_pending, database, run_id, after)
    return pending


@router.get(
    "/runs/{run_id}/commands/pending",
    response_model=CommandList,
    responses=problems(401, 403, 404, 429, 503),
)
async def pending_commands(
    request: Request,
    run_id: RowId,
    database: DatabaseDep,
    hub: HubDep,
    writes: RunWritesDep,
    principal: Annotated[Principal, Depends(require("ingest"))],
    after: CommandCursor = 0,
    wait: WaitSeconds = DEFAULT_WAIT_SECONDS,
):
    """The run's commands not yet applied, refused or cancelled, with id > `after`, oldest first.

    When there is none, waits up to `wait` s for one to be issued (long-poll);
    it may answer none. Commands answered `requested` become `delivered`.
    """
    with hub.subscribe(commands_channel(run_id)) as subscription:  # before reading: no lost wake
        pending = await _wait_for_pending(
            request, subscription, database, run_id, principal, after, wait
        )
    if not pending:
        return CommandList(commands=[])
    if any(command.state == "requested" for command in pending):
        deliver = functools.partial(deliver_commands, run_id=run_id, after=after)
        pending = await writes.write(deliver, order=run_id)
    return command_list(pending)


@router.post(
    "/runs/{run_id}/commands/{command_id}/outcome",
    response_model=Command,
    responses=problems(401, 403, 404, 409, 413, 429, 503),
)
async def report_outcome(
    run_id: RowId,
    command_id: RowId,
    outcome: OutcomeIn,
    writes: RunWritesDep,
    principal: Trainer,
):
    """The training applied or refused the command. The same outcome again: unchanged;
    another, or a cancelled command: 409."""
    work = functools.partial(
        settle_command,
        run_id=run_id,
        command_id=command_id,
        state=outcome.state,
        detail=outcome.detail,
        epoch=outcome.epoch,
        step=outcome.step,
        visible=principal.sees_project,
    )
    return command_answer(await _write(writes, work, run_id))


@router.post(
    "/runs/{run_id}/commands/{command_id}/cancel",
    response_model=Command,
    responses=problems(401, 403, 404, 409, 413, 503),
)
async def cancel(run_id: RowId, command_id: RowId, writes: RunWritesDep, principal: Issuer):
    """Withdraw a command the training has not applied or refused yet (409 once it has)."""
    work = functools.partial(
        cancel_command, run_id=run_id, command_id=command_id, visible=principal.sees_project
    )
    return command_answer(await _write(writes, work, run_id))
