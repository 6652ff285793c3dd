"""Events of a run: batched ingest (exactly once per seq) and listing."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from ..deps import (
    HubDep,
    Ingester,
    Reader,
    RowId,
    RunDep,
    SessionDep,
    WriteSessionDep,
    lock_visible_run,
)
from ..ingest import ingest_events
from ..live import RUNS_CHANNEL, run_channel
from ..models import Event
from ..schemas import KIND_PATTERN, EventBatch
from ..views import event_view

router = APIRouter(prefix="/runs/{run_id}/events", tags=["events"])


@router.post("")
def post_events(
    run_id: RowId, batch: EventBatch, session: WriteSessionDep, hub: HubDep, principal: Ingester
):
    """Store a batch of events; events whose seq is already stored are skipped.

    Every accepted event is committed before the answer.
    """
    run = lock_visible_run(session, run_id, principal)
    accepted, duplicates = ingest_events(session, run, batch.events)
    session.commit()
    hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return {"accepted": accepted, "duplicates": duplicates, "status": run.status}


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
