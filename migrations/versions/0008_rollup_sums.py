"""Rollups keep the sum and count of their finite values: means of groups of runs.

`GET /api/v1/aggregate` averages a metric per bucket of steps over many runs;
with each rollup's finite sum and count it reads a few rollups per bucket
instead of every point. The rollups are rebuilt from the points, as 0003 built
them, with the two new columns filled.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# `callboard.server.store.models.ROLLUP_WIDTHS` when this was written.
WIDTHS = (16, 256, 4096, 65536, 1048576)
# `callboard.server.store.rollups.SUMMABLE_LIMIT`: the values `finite_sum` adds up.
FINITE = "value BETWEEN -1e300 AND 1e300"


def upgrade():
    with op.batch_alter_table("metric_rollups") as rollups:
        rollups.add_column(sa.Column("finite_sum", sa.Double()))
        rollups.add_column(sa.Column("finite_points", sa.BigInteger()))
    op.execute("DELETE FROM metric_rollups")
    for width in WIDTHS:
        op.execute(
            "INSERT INTO metric_rollups (run_id, key, width, bucket, first_step, last_step, "
            "min_value, max_value, max_epoch, max_time, points, finite_sum, finite_points) "
            f"SELECT run_id, key, {width}, step / {width}, MIN(step), MAX(step), MIN(value), "
            f"MAX(value), MAX(epoch), MAX(time), COUNT(*), "
            f"COALESCE(SUM(CASE WHEN {FINITE} THEN value END), 0), "
            f"COUNT(CASE WHEN {FINITE} THEN 1 END) FROM metric_points "
            f"WHERE value IS NOT NULL GROUP BY run_id, key, step / {width}"
        )


def downgrade():
    with op.batch_alter_table("metric_rollups") as rollups:
        rollups.drop_column("finite_points")
        rollups.drop_column("finite_sum")
