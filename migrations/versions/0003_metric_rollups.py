"""Metric rollups (min/max per step bucket) for fast charts of long series; NaN points index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# `callboard.server.store.models.ROLLUP_WIDTHS` when this was written.
WIDTHS = (16, 256, 4096, 65536, 1048576)


def upgrade():
    op.create_table(
        "metric_rollups",
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("width", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("bucket", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("min_value", sa.Double(), nullable=False),
        sa.Column("max_value", sa.Double(), nullable=False),
        sa.Column("max_epoch", sa.Integer()),
        sa.Column("max_time", sa.Double(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_points_nan",
        "metric_points",
        ["run_id", "key", "step"],
        sqlite_where=sa.text("value IS NULL"),
        postgresql_where=sa.text("value IS NULL"),
    )
    for width in WIDTHS:
        op.execute(
            "INSERT INTO metric_rollups (run_id, key, width, bucket, first_step, last_step, "
            "min_value, max_value, max_epoch, max_time, points) "
            f"SELECT run_id, key, {width}, step / {width}, MIN(step), MAX(step), MIN(value), "
            "MAX(value), MAX(epoch), MAX(time), COUNT(*) FROM metric_points "
            f"WHERE value IS NOT NULL GROUP BY run_id, key, step / {width}"
        )


def downgrade():
    op.drop_index("ix_points_nan", table_name="metric_points")
    op.drop_table("metric_rollups")
