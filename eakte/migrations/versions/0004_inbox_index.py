"""inbox index: a department's open decisions by due date without sorting every case

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 21:15:00
"""
from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_vorgang_inbox', 'vorgang', ['department', 'status', 'due_on', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_vorgang_inbox', table_name='vorgang')
