"""Remote commands to a run's training: stop, pause, checkpoint, set the learning rate, ...

One row per command with its lifecycle (requested -> delivered -> applied | refused,
or cancelled); `ix_commands_run_id` serves a run's commands in order and the
long-poll's "unsettled commands after id N".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "commands",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.Double()),
        sa.Column("reason", sa.Text()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("requested_by", sa.String(200)),
        sa.Column("requested_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double()),
        sa.Column("settled_at", sa.Double()),
        sa.Column("epoch", sa.Integer()),
        sa.Column("step", sa.BigInteger()),
    )
    op.create_index("ix_commands_run_id", "commands", ["run_id", "id"])


def downgrade():
    op.drop_index("ix_commands_run_id", table_name="commands")
    op.drop_table("commands")
