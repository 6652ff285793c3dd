"""Metric keys and series of a run."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from callboard.server.api.answers import MetricKeys, MetricSeries, problems
from callboard.server.api.deps import SessionDep, VisibleRun, require
from callboard.server.api.fast_path import json_answer
from callboard.server.api.schemas import MAX_BIGINT
from callboard.server.store.series import read_series, series_x_axis

router = APIRouter(
    prefix="/runs/{run_id}/metrics", tags=["metrics"], dependencies=[Depends(require("read"))]
)


@router.get("", response_model=MetricKeys, responses=problems(401, 403, 404, 503))
def metric_keys(run: VisibleRun):
    """The names of the run's metrics."""
    return {"keys": sorted((run.summary or {}).keys())}


@router.get("/{key:path}", response_model=MetricSeries, responses=problems(401, 403, 404, 503))
def metric_series(
    run: VisibleRun,
    key: str,
    session: SessionDep,
    max_points: Annotated[int | None, Query(ge=2, le=100_000)] = None,
    after_step: Annotated[int | None, Query(ge=-MAX_BIGINT, le=MAX_BIGINT)] = None,
):
    """One metric's points by step; `max_points` downsamples keeping each bucket's min and max."""
    if key not in (run.summary or {}):
        raise HTTPException(status_code=404, detail=f"run {run.id} has no metric {key!r}")
    points, total = read_series(session, run.id, key, max_points, after_step)
    # Encoded by orjson: FastAPI's generic encoder takes longer than the query on long series.
    return json_answer(
        {
            "key": key,
            "points": points,
            "total": total,
            "downsampled": len(points) < total,
            "x_axis": series_x_axis(points),
        }
    )
