"""Metric rollups: min and max of each metric per bucket of steps, at a few widths.

Kept up to date at ingest, so a chart of a million-point series reads a few
thousand rollups instead of every point (see `series.read_series`).
"""

import functools

from callboard.server.store.bulk_insert import Table
from callboard.server.store.models import ROLLUP_WIDTHS

ROLLUP_COLUMNS = (
    "run_id",
    "key",
    "width",
    "bucket",
    "first_step",
    "last_step",
    "min_value",
    "max_value",
    "max_epoch",
    "max_time",
    "points",
)
ROLLUPS = Table(
    "metric_rollups",
    ROLLUP_COLUMNS,
    # run_id, key, width, bucket, first/last step, min/max value, epoch, time, points
    (
        "integer",
        "text",
        "integer",
        "bigint",
        "bigint",
        "bigint",
        "float8",
        "float8",
        "integer",
        "float8",
        "bigint",
    ),
)


def rollup_rows(run_id, points):
    """Rollup rows (in `ROLLUP_COLUMNS` order) summing up `points` at every width.

    `points` are metric_points rows `(run_id, key, step, epoch, value, time)`;
    NaN points (value None) are not rolled up. Each width is built from the
    finer one, so the cost is about one pass over the points.
    """
    level = {}
    first_width = ROLLUP_WIDTHS[0]
    for _run, key, step, epoch, value, when in points:  # `_merge` inlined: the hot loop
        if value is None:
            continue
        slot = (key, step // first_width)
        found = level.get(slot)
        if found is None:
            level[slot] = [step, step, value, value, epoch, when, 1]
            continue
        if step < found[0]:
            found[0] = step
        elif step > found[1]:
            found[1] = step
        if value < found[2]:
            found[2] = value
        elif value > found[3]:
            found[3] = value
        if epoch is not None and (found[4] is None or epoch > found[4]):
            found[4] = epoch
        if when > found[5]:
            found[5] = when
        found[6] += 1
    rows = []
    widths = list(ROLLUP_WIDTHS)
    for index, width in enumerate(widths):
        rows.extend(
            (run_id, key, width, bucket, *summary) for (key, bucket), summary in level.items()
        )
        if index + 1 == len(widths):
            break
        ratio = widths[index + 1] // width
        coarser = {}
        for (key, bucket), summary in level.items():
            slot = (key, bucket // ratio)
            found = coarser.get(slot)
            if found is None:
                coarser[slot] = list(summary)
            else:
                _merge(found, summary)
        level = coarser
    return rows


def _merge(into, other):
    """Fold rollup summary `other` into `into`: [first, last, min, max, epoch, time, points]."""
    first, last, lowest, highest, epoch, when, points = other
    if first < into[0]:
        into[0] = first
    if last > into[1]:
        into[1] = last
    if lowest < into[2]:
        into[2] = lowest
    if highest > into[3]:
        into[3] = highest
    if epoch is not None and (into[4] is None or epoch > into[4]):
        into[4] = epoch
    if when > into[5]:
        into[5] = when
    into[6] += points


@functools.cache
def rollup_upsert(dialect_name):
    """The ON CONFLICT DO UPDATE clause folding new rollup rows into stored ones."""
    table = "metric_rollups"
    if dialect_name == "postgresql":
        least, greatest = "LEAST", "GREATEST"  # both skip NULLs

        def latest_epoch(old, new):
            return f"GREATEST({old}, {new})"
    else:
        least, greatest = "MIN", "MAX"  # SQLite's scalar MIN/MAX return NULL on any NULL

        def latest_epoch(old, new):
            return f"COALESCE(MAX({old}, {new}), {old}, {new})"

    def old(column):
        return f"{table}.{column}"

    updates = {
        "first_step": f"{least}({old('first_step')}, excluded.first_step)",
        "last_step": f"{greatest}({old('last_step')}, excluded.last_step)",
        "min_value": f"{least}({old('min_value')}, excluded.min_value)",
        "max_value": f"{greatest}({old('max_value')}, excluded.max_value)",
        "max_epoch": latest_epoch(old("max_epoch"), "excluded.max_epoch"),
        "max_time": f"{greatest}({old('max_time')}, excluded.max_time)",
        "points": f"{old('points')} + excluded.points",
    }
    return "ON CONFLICT (run_id, key, width, bucket) DO UPDATE SET " + ", ".join(
        f"{column} = {value}" for column, value in updates.items()
    )
