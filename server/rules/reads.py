"""What the rule engine reads: runs, their new metric points, other runs' values at a step."""

from sqlalchemy import bindparam, func, select

from callboard.server.rules.spec import METRIC_CONDITIONS
from callboard.server.store.models import MetricPoint, Project, Run
from callboard.server.store.statements import compiled_once

POINTS = MetricPoint.__table__
RUN_COLUMNS = (
    Run.id,
    Run.name,
    Run.status,
    Run.project_id,
    Run.last_event_at,
    Run.created_at,
    Project.name.label("project"),
)


def run_query():
    """The columns a rule reads of a run, with its project's name."""
    return select(*RUN_COLUMNS).join(Project, Project.id == Run.project_id)


def runs_by_id(connection, run_ids):
    """The runs `run_ids` (`run_query` rows), in id order."""
    if not run_ids:
        return []
    return connection.execute(run_query().where(Run.id.in_(sorted(run_ids)))).all()


@compiled_once
def _points_query(key_count):
    """Points of run `run_id` past step `after` of `key_count` metrics (`key_0`, ...)."""
    keys = [bindparam(f"key_{index}") for index in range(key_count)]
    return (
        select(POINTS.c.key, POINTS.c.step, POINTS.c.epoch, POINTS.c.value)
        .where(
            POINTS.c.run_id == bindparam("run_id"),
            POINTS.c.key.in_(keys),
            POINTS.c.step > bindparam("after"),
        )
        .order_by(POINTS.c.key, POINTS.c.step, POINTS.c.id)
    )


def new_points(connection, run_id, rules, judgements):
    """`{metric: [(step, epoch, value), ...]}` in step order, past the earliest cursor of the
    rules watching a metric (all of them for a rule this process has not fed yet).

    Read straight on the driver's cursor: every new point is read once per batch.
    """
    cursors = {}
    for rule in rules:
        if rule.condition.kind in METRIC_CONDITIONS:
            cursors.setdefault(rule.condition.metric, []).append(judgements[rule.id].cursor)
    if not cursors:
        return {}
    known = [cursor for found in cursors.values() for cursor in found]
    after = -1 if None in known else min(known)
    keys = sorted(cursors)
    statement = _points_query(connection.dialect, len(keys))
    values = {"run_id": run_id, "after": after, **{f"key_{i}": k for i, k in enumerate(keys)}}
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement.sql, statement.parameters(values))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    points = {}
    for key, step, epoch, value in rows:
        points.setdefault(key, []).append((step, epoch, value))
    return points


def values_at(connection, project_id, metric, step):
    """`{run id: value}` of `metric` at `step` for the project's runs (one each; None: NaN)."""
    return dict(
        connection.execute(
            select(POINTS.c.run_id, func.max(POINTS.c.value))
            .join(Run, Run.id == POINTS.c.run_id)
            .where(Run.project_id == project_id, POINTS.c.key == metric, POINTS.c.step == step)
            .group_by(POINTS.c.run_id)
        ).all()
    )
