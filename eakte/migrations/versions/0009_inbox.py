"""work lists: case assignment (claim), priority, deputies (Vertretung)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 14:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eakte.models import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vorgang') as t:
        t.add_column(sa.Column('assignee', sa.String(length=200), nullable=True))
        t.add_column(sa.Column('assigned_at', UTCDateTime(), nullable=True))
        t.add_column(sa.Column('priority', sa.String(length=8), nullable=False, server_default='normal'))
        t.create_index('ix_vorgang_assignee', ['assignee'])
    op.create_table(
        'vertretung',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('principal', sa.String(length=200), nullable=False),
        sa.Column('deputy', sa.String(length=200), nullable=False),
        sa.Column('department', sa.String(length=64), nullable=False),
        sa.Column('valid_from', UTCDateTime(), nullable=False),
        sa.Column('valid_until', UTCDateTime(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('revoked_at', UTCDateTime(), nullable=True),
        sa.Column('revoked_by', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_vertretung_principal', 'vertretung', ['principal'])
    op.create_index('ix_vertretung_deputy', 'vertretung', ['deputy'])
    op.create_index('ix_vertretung_department', 'vertretung', ['department'])


def downgrade() -> None:
    op.drop_table('vertretung')
    with op.batch_alter_table('vorgang') as t:
        t.drop_index('ix_vorgang_assignee')
        for col in ('priority', 'assigned_at', 'assignee'):
            t.drop_column(col)
