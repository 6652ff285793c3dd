"""Server-sent events: a run's events as they are stored, and changes to the runs list.

Each message carries an `id`; a browser reconnecting with `Last-Event-ID`
(EventSource does it by itself) gets everything it missed, read from the database.

Every open stream re-checks its caller's token or session every
`AUTH_CHECK_SECONDS` (through the token cache), and after each `BATCH` of a
backlog, and ends once it no longer admits them: a revoked token or an expired
session stops delivering within seconds, even halfway through a long history.

Memory: a stream holds at most `BATCH` messages, as text, while a slow reader
drains them, and a server serves at most `Settings.max_streams` streams at once
(more get 503 with `Retry-After`).
"""

import json
import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from callboard.server.api.answers import (
    SUMMARY_ONLY,
    EventStreamResponse,
    RunEvent,
    RunSummary,
    event_stream,
    event_view,
    json_problems,
    run_summary,
)
from callboard.server.api.deps import (
    AfterRowId,
    DatabaseDep,
    HubDep,
    Reader,
    RowId,
    SettingsDep,
    still_admitted,
    visible_run,
)
from callboard.server.live.hub import RUNS_CHANNEL, run_channel
from callboard.server.store.models import Event, Project, Run

router = APIRouter(tags=["live"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
BATCH = 200  # messages read, and held until a slow reader takes them, per stream
AUTH_CHECK_SECONDS = 2.0  # the token cache's lifetime: a re-check sees a revocation
STREAMS_BUSY_RETRY_SECONDS = 5


def sse_message(data, event=None, message_id=None):
    lines = []
    if message_id is not None:
        lines.append(f"id: {message_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


EVENT_CURSOR = TypeAdapter(AfterRowId)  # a run stream's message ids are event ids
TIME_CURSOR = TypeAdapter(Annotated[float, Field(ge=0, allow_inf_nan=False)])  # update times


class StreamSlots:
    """Counts the streams open on this server and refuses more than `limit` (503)."""

    def __init__(self, limit):
        self.limit = limit
        self.open = 0

    def take(self):
        if self.open >= self.limit:
            raise HTTPException(
                status_code=503,
                detail=f"this server already serves {self.limit} live streams: retry shortly",
                headers={"Retry-After": str(STREAMS_BUSY_RETRY_SECONDS)},
            )
        self.open += 1

    def give_back(self):
        self.open -= 1


def stream_slots(app):
    """The app's `StreamSlots`, made on first use (streams run on the event loop only)."""
    slots = getattr(app.state, "stream_slots", None)
    if slots is None:
        slots = app.state.stream_slots = StreamSlots(app.state.settings.max_streams)
    return slots


class LiveStream(StreamingResponse):
    """A server-sent events answer holding one of the server's stream slots until it ends."""

    def __init__(self, request, messages):
        self.slots = stream_slots(request.app)
        self.slots.take()
        super().__init__(messages, media_type="text/event-stream", headers=SSE_HEADERS)

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.give_back()


async def next_wakeup(request, subscription, keepalive_seconds):
    """Wait for a change on `subscription`: True on one, False when a keepalive is due,
    None once the caller's credential no longer admits them (the stream must end).

    The credential is re-checked every `AUTH_CHECK_SECONDS` meanwhile.
    """
    deadline = time.monotonic() + keepalive_seconds
    while True:
        left = deadline - time.monotonic()
        changed = await subscription.wait(max(0.0, min(AUTH_CHECK_SECONDS, left)))
        if not await still_admitted(request, "read"):
            return None
        if changed:
            return True
        if time.monotonic() >= deadline:
            return False


def _cursor(last_event_id, after, kind):
    """Where a stream starts: the `Last-Event-ID` a browser sends back, else `after`, else 0."""
    if not last_event_id:
        return after or 0
    try:
        return kind.validate_python(last_event_id)
    except ValidationError:
        what = "an event id" if kind is EVENT_CURSOR else "an update time"
        raise HTTPException(
            status_code=400, detail=f"Last-Event-ID must be {what} this stream sent"
        ) from None


def _check_run_visible(database, run_id, principal):
    """`deps.visible_run` on a session of its own: 404 for a run missing or out of project."""
    with database.reader() as session:
        visible_run(session, run_id, principal)


def _read_run_changes(database, run_id, after_id):
    """The run's summary and its events after `after_id`; `(None, [])` once it was deleted."""
    with database.reader() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None, []
        events = session.scalars(
            select(Event)
            .where(Event.run_id == run_id, Event.id > after_id)
            .order_by(Event.id)
            .limit(BATCH)
        ).all()
        return (
            run_summary(run).model_dump(mode="json"),
            [event_view(event).model_dump(mode="json") for event in events],
        )


class RunMessages:
    """A run stream's batches: the run's events after `cursor` (`message`, id = event id),
    then the run itself (`run`) whenever it changed. Called on a worker thread."""

    def __init__(self, database, run_id, cursor):
        self.database, self.run_id, self.cursor = database, run_id, cursor
        self.last_run = None

    def __call__(self):
        """`(the next batch as SSE text, events in it)`; `(None, 0)` once the run is deleted."""
        run, events = _read_run_changes(self.database, self.run_id, self.cursor)
        if run is None:
            return None, 0
        text = "".join(sse_message(event, message_id=event["id"]) for event in events)
        if events:
            self.cursor = events[-1]["id"]
        if run != self.last_run:
            self.last_run = run
            text += sse_message(run, event="run")
        return text, len(events)


async def live_messages(request, hub, channel, next_batch, keepalive_seconds):
    """A stream's text: `next_batch()` (on a worker thread) until it reads less than `BATCH`,
    then a wait for a change on `channel` (a keepalive comment every `keepalive_seconds`).
    Ends when `next_batch()` answers no text at all (None: what it streams is gone).

    Ends once the caller's credential no longer admits them: checked while waiting
    and after each full batch of a long backlog.
    """
    with hub.subscribe(channel) as subscription:
        yield "retry: 1000\n\n"
        while True:
            text, count = await run_in_threadpool(next_batch)
            if text is None:
                return
            if text:
                yield text
            if count == BATCH:
                if not await still_admitted(request, "read"):
                    return  # a revoked caller gets no more of a long backlog
                continue
            woken = await next_wakeup(request, subscription, keepalive_seconds)
            if woken is None:
                return
            if not woken:
                yield ": keepalive\n\n"


@router.get(
    "/runs/{run_id}/stream",
    response_class=EventStreamResponse,
    responses={
        **event_stream(message=RunEvent, run=RunSummary),
        **json_problems(400, 401, 403, 404, 503),
    },
)
async def stream_run(
    request: Request,
    run_id: RowId,
    database: DatabaseDep,
    hub: HubDep,
    settings: SettingsDep,
    principal: Reader,
    last_event_id: Annotated[str | None, Header()] = None,
    after: AfterRowId = 0,
):
    """The run's events (`message`, id = event id) and its status (`run`), live."""
    await run_in_threadpool(_check_run_visible, database, run_id, principal)
    batches = RunMessages(database, run_id, _cursor(last_event_id, after, EVENT_CURSOR))
    messages = live_messages(
        request, hub, run_channel(run_id), batches, settings.stream_keepalive_seconds
    )
    return LiveStream(request, messages)


def _read_runs_changes(database, since, project):
    with database.reader() as session:
        query = select(Run).options(*SUMMARY_ONLY).where(Run.updated_at > since)
        if project is not None:
            query = query.join(Project).where(Project.name == project)
        runs = session.scalars(query.order_by(Run.updated_at).limit(BATCH)).all()
        return [run_summary(run).model_dump(mode="json") for run in runs]


def _count_runs(database, project):
    with database.reader() as session:
        query = select(func.count(Run.id))
        if project is not None:
            query = query.join(Project).where(Project.name == project)
        return session.scalar(query)


class RunsRemoved(BaseModel):
    """Runs were deleted: a runs list asks again which runs it shows."""

    runs: int = Field(description="how many runs there are now (archived ones too)")


def runs_stream_answers():
    """`event_stream` of the runs stream: `run` (a RunSummary) and `removed`, whose small
    model no JSON route answers (so it is no component): its schema is written inline."""
    answers = event_stream(run=RunSummary)
    stream = answers[200]["content"]["text/event-stream"]
    run_message = stream["itemSchema"]["anyOf"][0]
    removed = {
        "properties": {
            "event": {"const": "removed"},
            "data": {
                **run_message["properties"]["data"],
                "contentSchema": RunsRemoved.model_json_schema(),
            },
        }
    }
    stream["itemSchema"]["anyOf"].append(removed)
    answers[200]["description"] += ", `removed` carries a RunsRemoved"
    return answers


class RunsMessages:
    """The runs stream's batches: runs of `project` (None: all) changed after `cursor`
    (`run`, id = the run's update time), and `removed` once runs were deleted (a
    deleted run has no row left to send). Called on a worker thread."""

    def __init__(self, database, cursor, project):
        self.database, self.cursor, self.project = database, cursor, project
        self.count = None  # runs there were when a batch last found no change

    def __call__(self):
        """`(the next batch as SSE text, runs in it)`."""
        runs = _read_runs_changes(self.database, self.cursor, self.project)
        if not runs:
            return self._removed(), 0
        messages = []
        for run in runs:
            self.cursor = max(self.cursor, run["updated_at"])
            messages.append(sse_message(run, event="run", message_id=repr(self.cursor)))
        return "".join(messages), len(runs)

    def _removed(self):
        """A `removed` message when there are fewer runs than at the last quiet batch.

        Counted only when no run changed: a change is a `run` message, after which a
        list asks again anyway (and drops the runs deleted meanwhile).
        """
        count = _count_runs(self.database, self.project)
        fewer = self.count is not None and count < self.count
        self.count = count
        return sse_message({"runs": count}, event="removed") if fewer else ""


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    responses={
        **runs_stream_answers(),
        **json_problems(400, 401, 403, 503),
    },
)
async def stream_runs(
    request: Request,
    database: DatabaseDep,
    hub: HubDep,
    settings: SettingsDep,
    principal: Reader,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        float | None, Query(ge=0, allow_inf_nan=False, description="update time to start after")
    ] = None,
):
    """Every change to any run (`run` messages, id = the run's update time), live; `removed`
    once runs were deleted."""
    batches = RunsMessages(database, _cursor(last_event_id, after, TIME_CURSOR), principal.project)
    messages = live_messages(request, hub, RUNS_CHANNEL, batches, settings.stream_keepalive_seconds)
    return LiveStream(request, messages)
