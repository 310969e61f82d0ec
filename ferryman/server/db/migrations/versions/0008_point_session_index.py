"""restore_points: an index on session_id, so session views find their points directly

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_restore_points_session_id", "restore_points", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_restore_points_session_id", table_name="restore_points")
