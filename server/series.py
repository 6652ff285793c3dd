"""Metric series queries, downsampled in SQL so a 1M-point run never ships 1M points."""

from sqlalchemy import func, select

from .models import MetricPoint
from .values import encode_number


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
        select(func.min(MetricPoint.step), func.max(MetricPoint.step), func.count()).where(*where)
    ).one()
    if not total:
        return [], 0
    if not max_points or total <= max_points:
        rows = session.execute(
            select(MetricPoint.step, MetricPoint.epoch, MetricPoint.value, MetricPoint.time)
            .where(*where)
            .order_by(MetricPoint.step, MetricPoint.id)
        )
        return [_point(*row) for row in rows], total
    return _downsample(session, where, low, high, max(1, max_points // 2)), total


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
    nan_rows = session.execute(
        select(MetricPoint.step, MetricPoint.epoch, MetricPoint.time)
        .where(*where, MetricPoint.value.is_(None))
        .order_by(MetricPoint.step)
        .limit(buckets)
    ).all()
    points = []
    for first, last, lowest, highest, epoch, when in rows:
        points.append(_point(first, epoch, lowest, when))
        if last != first or highest != lowest:
            points.append(_point(last, epoch, highest, when))
    points.extend(_point(step, epoch, None, when) for step, epoch, when in nan_rows)
    points.sort(key=lambda p: p["step"])
    return points
