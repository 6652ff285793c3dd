"""One metric over many runs, per bucket of x: each run's mean, then the group's statistics.

The x range of all runs is cut into at most `max_buckets` buckets of whole
numbers (`bucket_grid`). Within a bucket each run counts once, with the mean of
its finite points there; across a group's runs each bucket gets the mean,
population standard deviation, min, max and count (`group_stats`).

Aligned on steps, a run's bucket means come from the rollups (`finite_sum`,
`finite_points`): the grid's edges fall on rollup edges, so a bucket reads a
few rollups instead of every point. Short ranges (buckets of at most
`NARROW_WIDTH` steps) and series without rollups read the points, grouped in
SQL; aligned on epochs, each series' points are summed per epoch in SQL.
Values beyond ±1e300 (`SUMMABLE_LIMIT`) are left out like infinities.
"""

import functools
import math
from typing import NamedTuple

from sqlalchemy import BigInteger, Double, bindparam, case, cast, func, select

from callboard.server.store.models import ROLLUP_WIDTHS, MetricPoint, MetricRollup
from callboard.server.store.rollups import SUMMABLE_LIMIT

X_AXES = ("step", "epoch")
# The widest buckets read from points when rollups could serve (x in steps): a run's
# points read are then at most NARROW_WIDTH times the buckets asked for.
NARROW_WIDTH = 4


class Grid(NamedTuple):
    """Bucket `b` holds x in `[origin + b * width, origin + (b + 1) * width)`; `low` is the
    range's first x. `rollup_width` is the rollups whose buckets nest in these (None: none)."""

    low: int
    origin: int
    width: int
    rollup_width: int | None

    def start(self, bucket):
        """Bucket `bucket`'s first x: its start, or the range's first x for the first bucket."""
        return max(self.low, self.origin + bucket * self.width)


def _ceil_div(a, b):
    return -(-a // b)


def bucket_grid(low, high, max_buckets, rollup_widths=ROLLUP_WIDTHS):
    """The buckets over x in `[low, high]`: at most `max_buckets`, one per x for a short range.

    Buckets wider than `NARROW_WIDTH` are as wide as a rollup at least (fewer buckets,
    rather than reading every point); their width is a multiple of the widest rollup
    width that fits, and their edges fall on that rollup's edges.

    Example:
        >>> bucket_grid(0, 99_999, 1000)
        Grid(low=0, origin=0, width=112, rollup_width=16)
        >>> bucket_grid(0, 9_999, 1000)
        Grid(low=0, origin=0, width=16, rollup_width=16)
        >>> bucket_grid(3, 40, 1000)
        Grid(low=3, origin=3, width=1, rollup_width=None)
    """
    width = _ceil_div(high - low + 1, max_buckets)
    granule = max((size for size in rollup_widths if size <= width), default=1)
    if granule == 1 and width > NARROW_WIDTH and rollup_widths:
        granule = rollup_widths[0]
    origin = low - low % granule
    width = _ceil_div(_ceil_div(high - origin + 1, max_buckets), granule) * granule
    return Grid(low, origin, width, granule if granule > 1 else None)


def _bind_int(name):
    return bindparam(name, type_=BigInteger)


SERIES = (MetricPoint.run_id == bindparam("run_id"), MetricPoint.key == bindparam("key"))
SUMMABLE = MetricPoint.value.between(
    bindparam("lowest", type_=Double), bindparam("highest", type_=Double)
)
LIMITS = {"lowest": -SUMMABLE_LIMIT, "highest": SUMMABLE_LIMIT}


@functools.cache
def _step_extent():
    """The series' first and last step, off the ends of the (run, key, step) index
    (`ORDER BY ... LIMIT 1`: PostgreSQL may plan MIN/MAX as a scan of the series)."""
    step = MetricPoint.step
    first = select(step).where(*SERIES).order_by(step).limit(1).scalar_subquery()
    last = select(step).where(*SERIES).order_by(step.desc()).limit(1).scalar_subquery()
    return select(first, last)


@functools.cache
def _sums_from_points():
    """`(bucket, sum, count)` of a series' summable points, per bucket of steps."""
    bucket = ((MetricPoint.step - _bind_int("origin")) // _bind_int("width")).label("bucket")
    return (
        select(bucket, func.sum(MetricPoint.value), func.count(MetricPoint.value))
        .where(*SERIES, SUMMABLE)
        .group_by(bucket)
    )


@functools.cache
def _sums_from_rollups():
    """`(bucket, sum, count)` of a series' summable points, per bucket, from its rollups."""
    rollup_width = _bind_int("rollup_width")
    start = MetricRollup.bucket * rollup_width
    bucket = ((start - _bind_int("origin")) // _bind_int("width")).label("bucket")
    return (
        select(
            bucket,
            func.sum(MetricRollup.finite_sum),
            cast(func.sum(MetricRollup.finite_points), BigInteger),  # PostgreSQL: a numeric
        )
        .where(
            MetricRollup.run_id == bindparam("run_id"),
            MetricRollup.key == bindparam("key"),
            MetricRollup.width == rollup_width,
        )
        .group_by(bucket)
    )


@functools.cache
def _sums_by_epoch():
    """`(epoch, sum, count)` of a series' summable points, for every epoch it has a point at."""
    epoch = MetricPoint.epoch
    return (
        select(
            epoch,
            func.sum(case((SUMMABLE, MetricPoint.value))),
            func.count(case((SUMMABLE, 1))),
        )
        .where(*SERIES, epoch.is_not(None))
        .group_by(epoch)
    )


def run_means(connection, run_ids, key, axis, max_buckets):
    """`({run id: {bucket's first x: the run's mean there}}, [run ids without the metric])`.

    `axis` is one of `X_AXES`. Runs whose series has no summable point map to `{}`.
    """
    if axis == "epoch":
        return _means_by_epoch(connection, run_ids, key, max_buckets)
    extents, missing = {}, []
    for run_id in run_ids:
        low, high = connection.execute(_step_extent(), {"run_id": run_id, "key": key}).one()
        if low is None:
            missing.append(run_id)
        else:
            extents[run_id] = (low, high)
    if not extents:
        return {}, missing
    low = min(found[0] for found in extents.values())
    high = max(found[1] for found in extents.values())
    grid = bucket_grid(low, high, max_buckets)
    values = {"key": key, "origin": grid.origin, "width": grid.width, **LIMITS}
    means = {}
    for run_id in extents:
        rows = []
        if grid.rollup_width is not None:
            rows = connection.execute(
                _sums_from_rollups(),
                {**values, "run_id": run_id, "rollup_width": grid.rollup_width},
            ).all()
        if not rows:  # a short range, or a series stored without rollups
            rows = connection.execute(_sums_from_points(), {**values, "run_id": run_id}).all()
        means[run_id] = {
            grid.start(bucket): total / count for bucket, total, count in rows if count
        }
    return means, missing


def _means_by_epoch(connection, run_ids, key, max_buckets):
    """`run_means` by epoch: one scan of each series, its epochs bucketed here (a series
    has few epochs; no rollup is kept by epoch)."""
    sums, missing = {}, []
    for run_id in run_ids:
        rows = connection.execute(_sums_by_epoch(), {"run_id": run_id, "key": key, **LIMITS})
        rows = rows.all()
        if rows:
            sums[run_id] = rows
        else:
            missing.append(run_id)
    if not sums:
        return {}, missing
    low = min(row[0] for rows in sums.values() for row in rows)
    high = max(row[0] for rows in sums.values() for row in rows)
    grid = bucket_grid(low, high, max_buckets, rollup_widths=())
    means = {}
    for run_id, rows in sums.items():
        buckets = {}
        for epoch, total, count in rows:
            if count:
                found = buckets.setdefault(grid.start((epoch - grid.origin) // grid.width), [0, 0])
                found[0] += total
                found[1] += count
        means[run_id] = {x: total / count for x, (total, count) in buckets.items()}
    return means, missing


def _population_std(values, mean):
    """Scaled so that squaring a deviation cannot overflow, whatever the values."""
    deviations = [value / 2 - mean / 2 for value in values]
    scale = max(map(abs, deviations))
    if scale == 0:
        return 0.0
    return 2 * scale * math.sqrt(math.fsum((d / scale) ** 2 for d in deviations) / len(values))


def group_stats(series):
    """Columns `x, mean, std, min, max, count` over `series` (`{x: value}` each, one per run),
    for every x where at least one run has a value, in x order."""
    at = {}
    for values in series:
        for x, value in values.items():
            at.setdefault(x, []).append(value)
    columns = {name: [] for name in ("x", "mean", "std", "min", "max", "count")}
    for x in sorted(at):
        values = at[x]
        mean = math.fsum(values) / len(values)
        columns["x"].append(x)
        columns["mean"].append(mean)
        columns["std"].append(_population_std(values, mean))
        columns["min"].append(min(values))
        columns["max"].append(max(values))
        columns["count"].append(len(values))
    return columns
