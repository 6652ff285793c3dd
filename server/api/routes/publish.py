"""The endpoint the stock `keras.callbacks.RemoteMonitor` posts to, unchanged."""

import functools
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from callboard.server.api.answers import EpochPublished, Problem, problems
from callboard.server.api.deps import Ingester, RunWritesDep, check_project
from callboard.server.api.schemas import Name, keep_valid_metrics
from callboard.server.keras_compat import BadPost, parse_epoch_post, record_epoch
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
    writes: RunWritesDep,
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
    work = functools.partial(
        record_epoch,
        epoch=epoch,
        metrics=metrics,
        run_name=run,
        project=project,
        client=StockClient.of(request),
        dropped=dropped,
    )
    run_id = await writes.write(work)
    return {"run_id": run_id, "epoch": epoch, "dropped": dropped}
