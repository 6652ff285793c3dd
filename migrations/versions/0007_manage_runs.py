"""Managing runs: a note on each run, and archiving (hidden from the default runs list).

`runs.note` is the run's free text (Markdown, rendered safely by the server);
`runs.archived_at` is when the run was archived, NULL while it is not. The runs
list leaves archived runs out unless asked: `ix_runs_archived` finds the few
archived runs without reading the others.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("note", sa.Text()))
        runs.add_column(sa.Column("archived_at", sa.Double()))
    op.create_index("ix_runs_archived", "runs", ["archived_at"])


def downgrade():
    op.drop_index("ix_runs_archived", table_name="runs")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("archived_at")
        runs.drop_column("note")
