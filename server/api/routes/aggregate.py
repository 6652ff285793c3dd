"""Aggregate: one metric over many runs, grouped, as mean, spread and range per bucket of x.

What a comparison page draws as a band per group (mean ± std, or min to max),
as Aim and W&B do: `store.aggregate` computes it, this route groups the runs.
"""

import json
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from callboard.server.api.aggregate_answers import Aggregate
from callboard.server.api.answers import problems
from callboard.server.api.deps import Reader, SessionDep
from callboard.server.api.routes.sparklines import IDS, visible_runs
from callboard.server.api.schemas import MAX_KEY_LENGTH, NAME_PATTERN
from callboard.server.store.aggregate import X_AXES, group_stats, run_means

router = APIRouter(tags=["dashboard"])

CONFIG = "config."
GROUP_BY_FORMS = (
    "group_by must be 'config.<key>' (dots reach into nested config), 'tags', 'project' or 'none'"
)


def _config_value(config, path):
    """The value at dotted `path` in `config` (a key holding dots is found whole too)."""
    if path in config:
        return config[path]
    head, dot, rest = path.partition(".")
    inner = config.get(head)
    if dot and isinstance(inner, dict):
        return _config_value(inner, rest)
    return None


def _group_value(group_by, run):
    if group_by == "none":
        return None
    if group_by == "project":
        return run.project.name
    if group_by == "tags":
        return sorted(set(run.tags or []))
    return _config_value(run.config or {}, group_by.removeprefix(CONFIG))


def _number(value):
    """`value` as a float if it is a number (not a boolean) a float can hold, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            return None
    return None


def _as_json(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _identity(value):
    """What the runs of one group share: 1 and 1.0 are one value."""
    number = _number(value)
    return ("json", _as_json(value)) if number is None else ("number", number)


def _label(group_by, value):
    if group_by == "none":
        return "all runs"
    if group_by == "tags":
        return ", ".join(value) or "(no tags)"
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else _as_json(value)


def _order(value):
    """Numbers by value, then text, then anything else by its JSON; missing or empty last."""
    number = _number(value)
    if number is not None:
        return (0, number, "")
    if isinstance(value, str):
        return (1, 0.0, value)
    if value is None or value == []:
        return (3, 0.0, "")
    return (2, 0.0, _as_json(value))


def _check_group_by(group_by):
    fixed = group_by in ("tags", "project", "none")
    if not fixed and not (group_by.startswith(CONFIG) and len(group_by) > len(CONFIG)):
        raise HTTPException(status_code=422, detail=f"{GROUP_BY_FORMS}, got {group_by!r}")


@router.get("/aggregate", response_model=Aggregate, responses=problems(401, 403, 422, 503))
def aggregate(
    session: SessionDep,
    principal: Reader,
    ids: Annotated[str, IDS],
    key: Annotated[
        str, Query(min_length=1, max_length=MAX_KEY_LENGTH, pattern=NAME_PATTERN.pattern)
    ],
    group_by: Annotated[str, Query(max_length=2000, description=GROUP_BY_FORMS)] = "none",
    x: Annotated[Literal[X_AXES], Query(description="what the points are aligned on")] = "step",
    max_points: Annotated[int, Query(ge=2, le=10_000, description="buckets, at most")] = 1000,
):
    """Metric `key` of runs `ids`, grouped: per bucket of x, each run's mean of its finite
    points there, and over a group's runs their mean, population std, min, max and count.

    Runs the caller may not see are left out; visible runs without the metric are listed
    in `missing_run_ids`. Buckets where no run of a group has a value are left out.
    """
    _check_group_by(group_by)
    runs = sorted(visible_runs(session, principal, ids), key=lambda run: run.id)
    means, missing = run_means(session.connection(), [run.id for run in runs], key, x, max_points)
    groups = {}
    for run in runs:
        if run.id in means:
            value = _group_value(group_by, run)
            groups.setdefault(_identity(value), (value, []))[1].append(run.id)
    answer = [
        {
            "label": _label(group_by, value),
            "value": value,
            "run_ids": run_ids,
            **group_stats([means[run_id] for run_id in run_ids]),
        }
        for value, run_ids in sorted(groups.values(), key=lambda group: _order(group[0]))
    ]
    return {
        "key": key,
        "x_axis": x,
        "group_by": group_by,
        "groups": answer,
        "missing_run_ids": missing,
    }
