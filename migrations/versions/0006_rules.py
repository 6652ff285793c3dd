"""Rules and alerts: rules, where each stands on each run, their firings and webhook posts.

`runs.last_event_at` is when the training last sent an event (heartbeats don't
count): what a `silent` rule watches. `uq_rule_firings_episode` is the last
guard of "once per run and condition episode"; `ix_webhook_deliveries_due`
serves the delivery workers' "what is due now".

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _foreign_id(table):
    return sa.ForeignKey(f"{table}.id", ondelete="CASCADE")


def upgrade():
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("last_event_at", sa.Double()))
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("project", sa.String(200)),
        sa.Column("condition", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("base_url", sa.String(1000)),
        sa.Column("created_by", sa.String(200)),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "rule_states",
        sa.Column("rule_id", sa.Integer(), _foreign_id("rules"), primary_key=True),
        sa.Column("run_id", sa.Integer(), _foreign_id("runs"), primary_key=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.BigInteger()),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "rule_firings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule_id", sa.Integer(), _foreign_id("rules"), nullable=False),
        sa.Column("run_id", sa.Integer(), _foreign_id("runs"), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("rule_name", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("metric", sa.String(200)),
        sa.Column("value", sa.String(40)),
        sa.Column("epoch", sa.Integer()),
        sa.Column("done", sa.JSON(), nullable=False),
        sa.Column("fired_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("rule_id", "run_id", "episode", name="uq_rule_firings_episode"),
    )
    op.create_index("ix_rule_firings_fired_at", "rule_firings", ["fired_at"])
    op.create_index("ix_rule_firings_run_id", "rule_firings", ["run_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firing_id", sa.Integer(), _foreign_id("rule_firings"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(100)),
        sa.Column("idempotency_key", sa.String(100), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("lease_until", sa.Double()),
        sa.Column("delivered_at", sa.Double()),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_firing", "webhook_deliveries", ["firing_id"])


def downgrade():
    op.drop_table("webhook_deliveries")
    op.drop_table("rule_firings")
    op.drop_table("rule_states")
    op.drop_table("rules")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("last_event_at")
