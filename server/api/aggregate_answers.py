"""The answer of `GET /api/v1/aggregate` (`routes/aggregate.py`), as pydantic models.

Columnar: a group's statistics are parallel lists, one item per bucket of x.

Example:
    `@router.get("/aggregate", response_model=Aggregate)`
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

from callboard.server.store.aggregate import X_AXES


class GroupSeries(BaseModel):
    """One group of runs: per bucket of x, the statistics of the runs' means there."""

    label: str = Field(description='the group\'s value as text; "(none)" for a missing one')
    value: Any = Field(description="the value the runs share (config value, tags, project)")
    run_ids: list[int]
    x: list[int] = Field(description="each bucket's first x (step or epoch)")
    mean: list[float]
    std: list[float] = Field(description="population standard deviation")
    min: list[float]
    max: list[float]
    count: list[int] = Field(description="runs with a value in the bucket")


class Aggregate(BaseModel):
    key: str
    x_axis: Literal[X_AXES]
    group_by: str = Field(description='"config.<key>", "tags", "project" or "none"')
    groups: list[GroupSeries] = Field(description="by value: numbers, then text, nulls last")
    missing_run_ids: list[int] = Field(description="visible runs without the metric")
