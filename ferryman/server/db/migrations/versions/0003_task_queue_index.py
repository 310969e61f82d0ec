"""tasks: priority copied from the session, and an index that reads the queue in order

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="50"))
    op.execute(
        "UPDATE tasks SET priority = "
        "(SELECT priority FROM sessions WHERE sessions.id = tasks.session_id)"
    )
    op.create_index("ix_tasks_queue", "tasks", ["state", sa.text("priority DESC"), "queued", "id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_queue", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("priority")
