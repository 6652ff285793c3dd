"""Metric series queries, downsampled in SQL so a 1M-point run never ships 1M points.

A long series is drawn from `metric_rollups` (min and max per bucket of steps,
kept at ingest) instead of its points: a chart of a million points reads a few
thousand rollups. Short series, and reads after a step, scan their points.
"""

from sqlalchemy import func, select

from callboard.server.store.models import ROLLUP_WIDTHS, MetricPoint, MetricRollup
from callboard.server.store.storable import encode_number

# Above this many points a downsampled read uses the rollups.
ROLLUP_ABOVE_POINTS = 10_000


def x_axis(kind, epoch):
    """What the x of an event's metrics counts: `"epoch"` for an epoch end (its points sit
    at its epoch), else `"step"`."""
    return "epoch" if kind == "epoch_end" and epoch is not None else "step"


def series_x_axis(points):
    """What a series' steps count: `"epoch"` when every point sits at its epoch, else `"step"`."""
    return "epoch" if all(point["step"] == point["epoch"] for point in points) else "step"


def _point(step, epoch, value, when):
    return {"step": step, "epoch": epoch, "value": encode_number(value), "time": when}


def read_series(session, run_id, key, max_points=None, after_step=None):
    """Return `(points, total)` of metric `key`, at most `max_points` of them.

    Downsampling splits the step range into `max_points // 2` buckets and keeps
    each bucket's lowest and highest value at the bucket's first and last step,
    so spikes survive; NaN points are always kept.
    """
    where = [MetricPoint.run_id == run_id, MetricPoint.key == key]
    if after_step is not None:
        where.append(MetricPoint.step > after_step)
        low, high, total = session.execute(
            select(func.min(MetricPoint.step), func.max(MetricPoint.step), func.count()).where(
                *where
            )
        ).one()
    else:
        low, high, total = _extent(session, run_id, key)
    if not total:
        return [], 0
    if not max_points or total <= max_points:
        rows = session.execute(
            select(MetricPoint.step, MetricPoint.epoch, MetricPoint.value, MetricPoint.time)
            .where(*where)
            .order_by(MetricPoint.step, MetricPoint.id)
        )
        return [_point(*row) for row in rows], total
    buckets = max(1, max_points // 2)
    if after_step is None and total > ROLLUP_ABOVE_POINTS and _has_rollups(session, run_id, key):
        width = rollup_width(high - low + 1, buckets)
        if width is not None:
            rows = (
                session.connection()
                .execute(
                    select(
                        MetricRollup.first_step,
                        MetricRollup.last_step,
                        MetricRollup.min_value,
                        MetricRollup.max_value,
                        MetricRollup.max_epoch,
                        MetricRollup.max_time,
                    )
                    .where(
                        MetricRollup.run_id == run_id,
                        MetricRollup.key == key,
                        MetricRollup.width == width,
                    )
                    .order_by(MetricRollup.bucket)
                )
                .all()
            )
            return _bucketed(session, where, low, high, buckets, rows), total
    return _downsample(session, where, low, high, buckets), total


def _extent(session, run_id, key):
    """`(first step, last step, number of points)` without reading a long series.

    The ends come from the (run, key, step) index. Up to `ROLLUP_ABOVE_POINTS`
    points are counted; past that, the count is the widest rollups' (finite
    points) plus the NaN points (a partial index), unless the rollups are
    missing (points written outside `store_events`): then every point is counted.
    """
    where = [MetricPoint.run_id == run_id, MetricPoint.key == key]
    # In index order, so the count stops after the cap even on PostgreSQL without
    # statistics (which would otherwise bitmap-scan the whole series first).
    capped = session.scalar(
        select(func.count()).select_from(
            select(MetricPoint.step)
            .where(*where)
            .order_by(MetricPoint.step)
            .limit(ROLLUP_ABOVE_POINTS + 1)
            .subquery()
        )
    )
    if not capped:
        return None, None, 0
    low, high = _first_step(session, where), _first_step(session, where, last=True)
    if capped <= ROLLUP_ABOVE_POINTS:
        return low, high, capped
    finite = session.scalar(
        select(func.coalesce(func.sum(MetricRollup.points), 0)).where(
            MetricRollup.run_id == run_id,
            MetricRollup.key == key,
            MetricRollup.width == ROLLUP_WIDTHS[-1],
        )
    )
    nan = session.scalar(select(func.count()).where(*where, MetricPoint.value.is_(None)))
    total = int(finite) + nan
    if total <= ROLLUP_ABOVE_POINTS:  # no rollups for these points
        total = session.scalar(select(func.count()).where(*where))
    return low, high, total


def _first_step(session, where, last=False):
    """The series' first (or last) step, off the end of its (run, key, step) index.

    `ORDER BY step LIMIT 1` rather than MIN/MAX: PostgreSQL plans MIN/MAX as a
    scan of the whole series until the table has statistics.
    """
    order = MetricPoint.step.desc() if last else MetricPoint.step
    return session.scalar(select(MetricPoint.step).where(*where).order_by(order).limit(1))


def _has_rollups(session, run_id, key):
    found = session.scalar(
        select(MetricRollup.points)
        .where(
            MetricRollup.run_id == run_id,
            MetricRollup.key == key,
            MetricRollup.width == ROLLUP_WIDTHS[-1],
        )
        .limit(1)
    )
    return found is not None


def rollup_width(span, buckets):
    """The widest rollup that still gives at least `buckets` buckets over `span` steps."""
    fitting = [width for width in ROLLUP_WIDTHS if span // width >= buckets]
    return fitting[-1] if fitting else None


def _downsample(session, where, low, high, buckets):
    span = high - low + 1
    bucket = ((MetricPoint.step - low) * buckets // span).label("bucket")
    rows = session.execute(
        select(
            func.min(MetricPoint.step),
            func.max(MetricPoint.step),
            func.min(MetricPoint.value),
            func.max(MetricPoint.value),
            func.max(MetricPoint.epoch),
            func.max(MetricPoint.time),
        )
        .where(*where, MetricPoint.value.is_not(None))
        .group_by(bucket)
    ).all()
    return _points(session, where, buckets, rows)


def _bucketed(session, where, low, high, buckets, rollups):
    """`_downsample` from rollup rows: each rollup joins the bucket of its first step."""
    span = high - low + 1
    merged = {}
    for first, last, lowest, highest, epoch, when in rollups:
        index = (first - low) * buckets // span
        found = merged.get(index)
        if found is None:
            merged[index] = [first, last, lowest, highest, epoch, when]
            continue
        # Rollups come in step order: `first` never lowers the bucket's first step.
        if last > found[1]:
            found[1] = last
        if lowest < found[2]:
            found[2] = lowest
        if highest > found[3]:
            found[3] = highest
        if epoch is not None and (found[4] is None or epoch > found[4]):
            found[4] = epoch
        if when > found[5]:
            found[5] = when
    return _points(session, where, buckets, merged.values())


def _points(session, where, buckets, rows):
    """Two points per bucket row (its min first, its max last), plus the NaN points."""
    nan_rows = session.execute(
        select(MetricPoint.step, MetricPoint.epoch, MetricPoint.time)
        .where(*where, MetricPoint.value.is_(None))
        .order_by(MetricPoint.step)
        .limit(buckets)
    ).all()
    points = []
    add = points.append
    for first, last, lowest, highest, epoch, when in rows:
        add(_point(first, epoch, lowest, when))
        if last != first or highest != lowest:
            add(_point(last, epoch, highest, when))
    points.extend(_point(step, epoch, None, when) for step, epoch, when in nan_rows)
    points.sort(key=lambda p: p["step"])
    return points
