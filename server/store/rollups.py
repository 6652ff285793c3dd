"""Metric rollups: min, max and finite sum of each metric per bucket of steps, at a few widths.

Kept up to date at ingest, so a chart of a million-point series reads a few
thousand rollups instead of every point (see `series.read_series`).
"""

from sqlalchemy import func

from callboard.server.store.bulk_insert import BulkInsert
from callboard.server.store.models import ROLLUP_WIDTHS, MetricRollup


def _merged_into_stored(insert, dialect_name):
    """ON CONFLICT DO UPDATE: a new rollup row folds into the stored one of its bucket."""
    old, new = insert.table.c, insert.excluded
    if dialect_name == "postgresql":
        least, greatest = func.least, func.greatest  # both skip NULLs
        latest_epoch = func.greatest(old.max_epoch, new.max_epoch)
    else:
        least, greatest = func.min, func.max  # SQLite's scalar MIN/MAX return NULL on any NULL
        latest_epoch = func.coalesce(
            func.max(old.max_epoch, new.max_epoch), old.max_epoch, new.max_epoch
        )
    return insert.on_conflict_do_update(
        index_elements=list(insert.table.primary_key.columns),
        set_={
            old.first_step: least(old.first_step, new.first_step),
            old.last_step: greatest(old.last_step, new.last_step),
            old.min_value: least(old.min_value, new.min_value),
            old.max_value: greatest(old.max_value, new.max_value),
            old.max_epoch: latest_epoch,
            old.max_time: greatest(old.max_time, new.max_time),
            old.points: old.points + new.points,
            old.finite_sum: old.finite_sum + new.finite_sum,
            old.finite_points: old.finite_points + new.finite_points,
        },
    )


ROLLUPS = BulkInsert(MetricRollup.__table__, on_conflict=_merged_into_stored)
ROLLUP_COLUMNS = tuple(column.key for column in ROLLUPS.columns)
# Values summed into `finite_sum`: finite ones within ±1e300, so that no sum of a
# bucket's points (nor a database's sum of sums) can overflow, which PostgreSQL refuses.
SUMMABLE_LIMIT = 1e300


def rollup_rows(run_id, points):
    """Rollup rows (in `ROLLUP_COLUMNS` order) summing up `points` at every width.

    `points` are metric_points rows `(run_id, key, step, epoch, value, time)`;
    NaN points (value None) are not rolled up; infinite ones are, but for the
    finite sum and count (values within `SUMMABLE_LIMIT`). Each width is built
    from the finer one, so the cost is about one pass over the points.
    """
    limit = SUMMABLE_LIMIT
    level = {}
    first_width = ROLLUP_WIDTHS[0]
    for _run, key, step, epoch, value, when in points:  # `_merge` inlined: the hot loop
        if value is None:
            continue
        slot = (key, step // first_width)
        found = level.get(slot)
        finite = -limit <= value <= limit
        if found is None:
            total = value if finite else 0.0
            level[slot] = [step, step, value, value, epoch, when, 1, total, int(finite)]
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
        if finite:
            found[7] += value
            found[8] += 1
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
    """Fold rollup summary `other` into `into`:
    [first, last, min, max, epoch, time, points, finite sum, finite points]."""
    first, last, lowest, highest, epoch, when, points, finite_sum, finite_points = other
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
    into[7] += finite_sum
    into[8] += finite_points
