"""The endpoint the stock `keras.callbacks.RemoteMonitor` posts to, unchanged."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from callboard.server.api.answers import EpochPublished, Problem, problems
from callboard.server.api.deps import DatabaseDep, HubDep, Ingester, check_project
from callboard.server.api.schemas import Name, keep_valid_metrics
from callboard.server.keras_compat import BadPost, parse_epoch_post, record_epoch
from callboard.server.live.hub import RUNS_CHANNEL, run_channel
from callboard.server.stock_runs import StockClient

router = APIRouter(tags=["keras compatibility"])


@router.post(
    "/publish/epoch/end/",
    response_model=EpochPublished,
    responses={
        **problems(401, 403, 413, 429, 503),
        422: {"model": Problem, "description": "a body Keras never sends, or bad query"},
    },
)
async def publish_epoch_end(
    request: Request,
    database: DatabaseDep,
    hub: HubDep,
    principal: Ingester,
    run: Annotated[Name | None, Query(description="run name")] = None,
    project: Annotated[Name, Query()] = "default",
):
    """One epoch from `keras.callbacks.RemoteMonitor` (form field or JSON body, NaN allowed).

    `?run=NAME&project=P` names the run; unnamed posts go to an automatic run.
    A new run of that name starts when the epoch counter falls back, or another
    client (address, User-Agent) posts under the same name (see `stock_runs`).
    """
    check_project(principal, project)
    body = await request.body()
    try:
        epoch, metrics = parse_epoch_post(body)
    except BadPost as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    metrics, dropped = keep_valid_metrics(metrics)  # a bad name costs its metric, not the epoch
    client = StockClient.of(request)
    run_id = await run_in_threadpool(
        _store, database, epoch, metrics, run, project, client, dropped
    )
    hub.publish(run_channel(run_id), RUNS_CHANNEL)
    return {"run_id": run_id, "epoch": epoch, "dropped": dropped}


def _store(database, epoch, metrics, run_name, project, client, dropped):
    with database.writer() as session:
        run = record_epoch(
            session,
            epoch,
            metrics,
            run_name=run_name,
            project=project,
            client=client,
            dropped=dropped,
        )
        session.commit()
        return run.id
