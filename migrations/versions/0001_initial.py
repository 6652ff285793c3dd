"""Initial schema: projects, runs, events, metric points.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "project_id",
            sa.Integer(),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("last_epoch", sa.Integer()),
        sa.Column("last_step", sa.BigInteger()),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double()),
        sa.Column("stop_requested_at", sa.Double()),
        sa.Column("stop_reason", sa.Text()),
        sa.Column("stop_acknowledged_at", sa.Double()),
        sa.Column("stopped_at", sa.Double()),
    )
    op.create_index("ix_runs_created", "runs", ["created_at"])
    op.create_index("ix_runs_name", "runs", ["name"])
    op.create_index("ix_runs_project_created", "runs", ["project_id", "created_at"])
    op.create_index("ix_runs_status_updated", "runs", ["status", "updated_at"])
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.BigInteger()),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer()),
        sa.Column("step", sa.BigInteger()),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),
    )
    op.create_index("ix_events_run_id", "events", ["run_id", "id"])
    op.create_table(
        "metric_points",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Integer()),
        sa.Column("value", sa.Double()),
        sa.Column("time", sa.Double(), nullable=False),
    )
    op.create_index("ix_points_run_key_step", "metric_points", ["run_id", "key", "step"])


def downgrade():
    op.drop_table("metric_points")
    op.drop_table("events")
    op.drop_table("runs")
    op.drop_table("projects")
