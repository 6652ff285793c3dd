"""Sparklines: each run's main metric as a short series, for many runs in one request."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from callboard.server.api.answers import Sparklines, problems
from callboard.server.api.deps import Reader, SessionDep, parse_row_id
from callboard.server.metric_keys import main_metric
from callboard.server.store.models import Run
from callboard.server.store.series import read_series

router = APIRouter(tags=["dashboard"])

MAX_IDS = 200
IDS = Query(
    pattern=r"^\d{1,18}(,\d{1,18})*$",
    max_length=19 * MAX_IDS,
    description=f"comma-separated run ids (at most {MAX_IDS})",
)


def visible_runs(session, principal, ids):
    """The runs among `ids` (a comma-separated string) that the caller may see."""
    wanted = [parse_row_id(part) for part in ids.split(",")[:MAX_IDS]]
    wanted = [run_id for run_id in wanted if run_id is not None]  # no run has another id
    runs = session.scalars(select(Run).where(Run.id.in_(wanted))).all()
    return [run for run in runs if principal.sees_project(run.project.name)]


@router.get("/sparklines", response_model=Sparklines, responses=problems(401, 403, 503))
def sparklines(
    session: SessionDep,
    principal: Reader,
    ids: Annotated[str, IDS],
    points: Annotated[int, Query(ge=2, le=500)] = 48,
):
    """`{"sparklines": {run id: {"key", "values"}}}`: the main metric, downsampled to `points`."""
    found = {}
    for run in visible_runs(session, principal, ids):
        key = main_metric((run.summary or {}).keys())
        values = []
        if key is not None:
            series, _total = read_series(session, run.id, key, points)
            values = [point["value"] for point in series]
        found[str(run.id)] = {"key": key, "values": values}
    return {"sparklines": found}
