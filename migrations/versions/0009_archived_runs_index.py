"""`ix_runs_archived` indexes the archived runs only (a partial index).

The runs list asks `archived_at IS NULL` (the runs not archived: nearly all of them).
SQLite, which keeps no statistics, took the full index for that equality and then
sorted every matching run for each page; partial, the index still finds the few
archived runs (`archived=true`) while the list reads its page straight off the index
of its sort (`ix_runs_created`, `ix_runs_updated`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ARCHIVED = sa.text("archived_at IS NOT NULL")


def upgrade():
    op.drop_index("ix_runs_archived", table_name="runs")
    op.create_index(
        "ix_runs_archived",
        "runs",
        ["archived_at"],
        sqlite_where=ARCHIVED,
        postgresql_where=ARCHIVED,
    )


def downgrade():
    op.drop_index("ix_runs_archived", table_name="runs")
    op.create_index("ix_runs_archived", "runs", ["archived_at"])
