"""Extremes: the lowest, highest and last value of every metric of some runs (best values)."""

from typing import Annotated

from fastapi import APIRouter
from sqlalchemy import func, select

from callboard.server.api.answers import Extremes, problems
from callboard.server.api.deps import Reader, SessionDep
from callboard.server.api.routes.sparklines import IDS, visible_runs
from callboard.server.store.models import ROLLUP_WIDTHS, MetricPoint, MetricRollup
from callboard.server.store.storable import encode_number

router = APIRouter(tags=["dashboard"])


def _from_rollups(session, run_ids):
    """`{(run id, key): (min, max)}` from the widest rollups: a few rows per series."""
    rows = session.execute(
        select(
            MetricRollup.run_id,
            MetricRollup.key,
            func.min(MetricRollup.min_value),
            func.max(MetricRollup.max_value),
        )
        .where(MetricRollup.run_id.in_(run_ids), MetricRollup.width == ROLLUP_WIDTHS[-1])
        .group_by(MetricRollup.run_id, MetricRollup.key)
    )
    return {(run_id, key): (low, high) for run_id, key, low, high in rows}


def _from_points(session, run_id, keys):
    """`{(run id, key): (min, max)}` scanning the points (series written without rollups)."""
    rows = session.execute(
        select(MetricPoint.key, func.min(MetricPoint.value), func.max(MetricPoint.value))
        .where(MetricPoint.run_id == run_id, MetricPoint.key.in_(keys))
        .group_by(MetricPoint.key)
    )
    return {(run_id, key): (low, high) for key, low, high in rows}


@router.get("/extremes", response_model=Extremes, responses=problems(401, 403, 503))
def extremes(session: SessionDep, principal: Reader, ids: Annotated[str, IDS]):
    """`{"runs": {run id: {metric: {"min", "max", "last"}}}}`; NaN points are ignored.

    A metric whose every value is NaN has `min` and `max` null.
    """
    runs = visible_runs(session, principal, ids)
    found = _from_rollups(session, [run.id for run in runs])
    for run in runs:
        missing = [key for key in (run.summary or {}) if (run.id, key) not in found]
        if missing:
            found.update(_from_points(session, run.id, missing))
    answer = {}
    for run in runs:
        metrics = {}
        for key, (_step, last) in sorted((run.summary or {}).items()):
            low, high = found.get((run.id, key), (None, None))
            metrics[key] = {
                "min": None if low is None else encode_number(low),
                "max": None if high is None else encode_number(high),
                "last": last,
            }
        answer[str(run.id)] = metrics
    return {"runs": answer}
