"""read indexes: the clerk's inbox page read off an index over the open cases (no sort of all of them)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 08:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# as in eakte/models.py (OPEN_INBOX_SQL), word for word: SQLite uses a partial index only for a
# query that repeats its condition exactly
OPEN_INBOX_SQL = "status IN ('awaiting_decision', 'awaiting_cosign', 'awaiting_documents')"


def upgrade() -> None:
    op.create_index('ix_vorgang_open_due', 'vorgang',
                    ['department', sa.text('(due_on IS NULL)'), 'due_on', 'created_at', 'id'],
                    sqlite_where=sa.text(OPEN_INBOX_SQL), postgresql_where=sa.text(OPEN_INBOX_SQL))


def downgrade() -> None:
    op.drop_index('ix_vorgang_open_due', table_name='vorgang')
