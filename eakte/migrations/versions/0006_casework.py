"""casework: processing deadline, Nachforderung, four-eyes, integrator webhook URL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eakte.models import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vorgang') as t:
        t.add_column(sa.Column('notify_url', sa.Text(), nullable=True))
        t.add_column(sa.Column('deadline_at', UTCDateTime(), nullable=True))
        t.add_column(sa.Column('escalated_at', UTCDateTime(), nullable=True))
        t.add_column(sa.Column('waiting_for', sa.JSON(), nullable=False, server_default='[]'))
        t.add_column(sa.Column('waiting_until', sa.Date(), nullable=True))
        t.add_column(sa.Column('first_decision_by', sa.String(length=200), nullable=True))
        t.add_column(sa.Column('cosigned_by', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('vorgang') as t:
        for col in ('cosigned_by', 'first_decision_by', 'waiting_until', 'waiting_for', 'escalated_at',
                    'deadline_at', 'notify_url'):
            t.drop_column(col)
