"""tasks: an index on (repository_id, ended), so the dashboard finds a repository's latest
task without reading every finished task

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_repository_ended", "tasks", ["repository_id", "ended"])


def downgrade() -> None:
    op.drop_index("ix_tasks_repository_ended", table_name="tasks")
