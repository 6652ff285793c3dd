"""Events of a run: batched ingest (exactly once per seq) and listing."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import select

from ..deps import Reader, RunDep, SessionDep
from ..ingest import RunNotFound, store_events
from ..lean import authorize, documented_input, json_answer, json_body, row_id
from ..live import RUNS_CHANNEL, run_channel
from ..models import Event
from ..schemas import KIND_PATTERN, EventBatch
from ..views import event_view

router = APIRouter(prefix="/runs/{run_id}/events", tags=["events"])


@router.post("", openapi_extra=documented_input(EventBatch))
async def post_events(request: Request):
    """Store a batch of events; events whose seq is already stored are skipped.

    Every accepted event is committed before the answer; concurrent batches
    share a transaction (`group_commit`). Served without dependency injection
    (`lean`): the same checks, at a fraction of the cost per request.
    """
    principal = await authorize(request, "ingest")
    run_id = row_id(request)
    events = (await json_body(request, EventBatch)).events

    def work(connection):
        return store_events(connection, run_id, events, visible=principal.sees_project)

    state = request.app.state
    try:
        stored = await state.writer.run(work, order=run_id, size=len(events) or 1)
    except RunNotFound:
        raise HTTPException(status_code=404, detail=f"run {run_id} not found") from None
    state.hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return json_answer(
        {"accepted": stored.accepted, "duplicates": stored.duplicates, "status": stored.status}
    )


@router.get("")
def list_events(
    run: RunDep,
    session: SessionDep,
    _: Reader,
    kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
    after_id: Annotated[int, Query(ge=0)] = 0,
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
