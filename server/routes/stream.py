"""Server-sent events: a run's events as they are stored, and changes to the runs list.

Each message carries an `id`; a browser reconnecting with `Last-Event-ID`
(EventSource does it by itself) gets everything it missed, read from the database.
"""

import json
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ..deps import DatabaseDep, HubDep, Reader, RowId, SettingsDep
from ..live import RUNS_CHANNEL, run_channel
from ..models import Event, Project, Run
from ..views import event_view, run_summary

router = APIRouter(tags=["live"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
BATCH = 2000


def sse_message(data, event=None, message_id=None):
    lines = []
    if message_id is not None:
        lines.append(f"id: {message_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def _cursor(last_event_id, after):
    try:
        return float(last_event_id) if last_event_id else (after or 0)
    except ValueError:
        raise HTTPException(status_code=400, detail="Last-Event-ID must be a number") from None


def _read_run_changes(database, run_id, after_id):
    with database.reader() as session:
        run = session.get(Run, run_id)
        events = session.scalars(
            select(Event)
            .where(Event.run_id == run_id, Event.id > after_id)
            .order_by(Event.id)
            .limit(BATCH)
        ).all()
        return run_summary(run), [event_view(event) for event in events]


@router.get("/runs/{run_id}/stream")
async def stream_run(
    run_id: RowId,
    database: DatabaseDep,
    hub: HubDep,
    settings: SettingsDep,
    principal: Reader,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="event id to start after")] = None,
):
    """The run's events (`message`, id = event id) and its status (`run`), live."""
    with database.reader() as session:
        run = session.get(Run, run_id)
        if run is None or not principal.sees_project(run.project.name):
            raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    cursor = int(_cursor(last_event_id, after))

    async def messages():
        nonlocal cursor
        with hub.subscribe(run_channel(run_id)) as subscription:
            yield "retry: 1000\n\n"
            last_run = None
            while True:
                run, events = await run_in_threadpool(_read_run_changes, database, run_id, cursor)
                for event in events:
                    cursor = event["id"]
                    yield sse_message(event, message_id=cursor)
                if run != last_run:
                    last_run = run
                    yield sse_message(run, event="run")
                if len(events) == BATCH:
                    continue
                if not await subscription.wait(settings.stream_keepalive_seconds):
                    yield ": keepalive\n\n"

    return StreamingResponse(messages(), media_type="text/event-stream", headers=SSE_HEADERS)


def _read_runs_changes(database, since, project):
    with database.reader() as session:
        query = select(Run).where(Run.updated_at > since)
        if project is not None:
            query = query.join(Project).where(Project.name == project)
        runs = session.scalars(query.order_by(Run.updated_at).limit(BATCH)).all()
        return [run_summary(run) for run in runs]


@router.get("/stream")
async def stream_runs(
    database: DatabaseDep,
    hub: HubDep,
    settings: SettingsDep,
    principal: Reader,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[float | None, Query(ge=0, description="update time to start after")] = None,
):
    """Every change to any run (`run` messages, id = the run's update time), live."""
    cursor = _cursor(last_event_id, after)

    async def messages():
        nonlocal cursor
        with hub.subscribe(RUNS_CHANNEL) as subscription:
            yield "retry: 1000\n\n"
            while True:
                runs = await run_in_threadpool(
                    _read_runs_changes, database, cursor, principal.project
                )
                for run in runs:
                    cursor = max(cursor, run["updated_at"])
                    yield sse_message(run, event="run", message_id=repr(cursor))
                if len(runs) == BATCH:
                    continue
                if not await subscription.wait(settings.stream_keepalive_seconds):
                    yield ": keepalive\n\n"

    return StreamingResponse(messages(), media_type="text/event-stream", headers=SSE_HEADERS)
