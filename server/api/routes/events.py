"""Events of a run: batched ingest (exactly once per seq) and listing."""

from operator import attrgetter
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import select

from callboard.server.api.answers import EventsPage, IngestResult, event_view, problems
from callboard.server.api.deps import AfterRowId, Reader, SessionDep, VisibleRun
from callboard.server.api.fast_path import (
    authorize,
    documented_input,
    json_answer,
    json_body,
    row_id,
)
from callboard.server.api.schemas import KIND_PATTERN, EventBatch
from callboard.server.store.group_commit import in_turns
from callboard.server.store.ingest import store_events
from callboard.server.store.models import Event

router = APIRouter(prefix="/runs/{run_id}/events", tags=["events"])


@router.post(
    "",
    responses={200: {"model": IngestResult}, **problems(401, 403, 404, 413, 429, 503)},
    openapi_extra=documented_input(EventBatch),
)
async def post_events(request: Request):
    """Store a batch of events; events whose seq is already stored are skipped.

    Every accepted event is committed before the answer; concurrent batches
    share a transaction (`group_commit`). Served without dependency injection
    (`fast_path`), and a clean small batch even ahead of the middleware stack
    (`ingest_lane`): the same checks, at a fraction of the cost per request.
    """
    principal = await authorize(request, "ingest")
    run_id = row_id(request)
    events = (await json_body(request, EventBatch)).events
    return json_answer(await store_batch(request.app.state, principal, run_id, events))


async def store_batch(state, principal, run_id, events):
    """Store `events` of run `run_id` for `principal`; the `IngestResult` as a dict.

    413 when they hold more metric values than the server takes in one request.
    """
    limit_values(events, state.settings.max_values_per_request)

    def work(connection, changed, part):
        stored = store_events(connection, run_id, part, visible=principal.sees_project)
        changed.add(run_id)
        return stored

    # A large batch is stored in turns with other requests, in seq order (retries skip
    # what a failed turn left stored).
    turns = in_turns(sorted(events, key=attrgetter("seq")), size_of=values_in)
    stored = await state.run_writes.write_in_turns(work, turns, order=run_id)
    return {
        "accepted": sum(part.accepted for part in stored),
        "duplicates": sum(part.duplicates for part in stored),
        "status": stored[-1].status,
    }


def values_in(event):
    """An event's weight for the writer: its metric values (at least 1)."""
    return max(1, len(event.metrics))


def limit_values(events, limit):
    """413 when `events` hold more than `limit` metric values in all."""
    count = sum(len(event.metrics) for event in events)
    if count > limit:
        raise HTTPException(
            status_code=413,
            detail=f"{count} metric values in one request, over this server's limit of {limit} "
            "(CALLBOARD_MAX_VALUES_PER_REQUEST): split the batch into smaller requests",
        )


@router.get("", response_model=EventsPage, responses=problems(401, 403, 404, 503))
def list_events(
    run: VisibleRun,
    session: SessionDep,
    _: Reader,
    kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
    after_id: AfterRowId = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    include_metrics: bool = True,
):
    """Events in the order they were stored; `kind` filters, `after_id` pages on."""
    query = select(Event).where(Event.run_id == run.id, Event.id > after_id)
    if kind:
        query = query.where(Event.kind == kind)
    elif not include_metrics:
        query = query.where(Event.kind.not_in(("epoch_end", "batch_end", "metrics")))
    events = session.scalars(query.order_by(Event.id).limit(limit)).all()
    return {"events": [event_view(event) for event in events]}
