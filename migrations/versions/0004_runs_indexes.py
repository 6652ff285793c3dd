"""Runs indexes that fit the dashboard's queries.

- The runs list sorts newest first with the id as tie-break (`created_at DESC, id DESC`):
  `ix_runs_created` and `ix_runs_project_created` end with `id`, so the index order is
  the list order and a page is read straight off the index, without a sort.
- The live runs stream reads `updated_at > cursor`: new `ix_runs_updated`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index("ix_runs_created", table_name="runs")
    op.create_index("ix_runs_created", "runs", ["created_at", "id"])
    op.drop_index("ix_runs_project_created", table_name="runs")
    op.create_index("ix_runs_project_created", "runs", ["project_id", "created_at", "id"])
    op.create_index("ix_runs_updated", "runs", ["updated_at"])


def downgrade():
    op.drop_index("ix_runs_updated", table_name="runs")
    op.drop_index("ix_runs_project_created", table_name="runs")
    op.create_index("ix_runs_project_created", "runs", ["project_id", "created_at"])
    op.drop_index("ix_runs_created", table_name="runs")
    op.create_index("ix_runs_created", "runs", ["created_at"])
