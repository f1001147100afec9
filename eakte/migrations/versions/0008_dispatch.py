"""dispatch channels: dispatch state and recipient, notifications, print batches

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 13:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eakte.models import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows of the first dispatch activity were portal dispatches, done when recorded: 'sent'
    with op.batch_alter_table('dispatch') as t:
        t.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='sent'))
        t.add_column(sa.Column('rule', sa.String(length=24), nullable=True))
        t.add_column(sa.Column('decision', sa.Text(), nullable=True))
        t.add_column(sa.Column('recipient', sa.JSON(), nullable=False, server_default='{}'))
        t.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))
        t.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        t.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        t.add_column(sa.Column('claimed_at', UTCDateTime(), nullable=True))
        t.add_column(sa.Column('sent_at', UTCDateTime(), nullable=True))
        t.add_column(sa.Column('message_id', sa.String(length=200), nullable=True))
        t.add_column(sa.Column('batch_date', sa.Date(), nullable=True))
        t.add_column(sa.Column('printed_at', UTCDateTime(), nullable=True))
        t.create_index('ix_dispatch_batch', ['channel', 'batch_date'])
        t.create_index('ix_dispatch_document', ['vorgang_id', 'dokument_id'])
    op.execute("UPDATE dispatch SET sent_at = at WHERE sent_at IS NULL")
    op.create_table(
        'notification',
        sa.Column('id', sa.Integer(), nullable=False, autoincrement=True),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('vorgang_id', sa.String(length=64), sa.ForeignKey('vorgang.id'), nullable=False),
        sa.Column('department', sa.String(length=64), nullable=True),
        sa.Column('audience', sa.String(length=16), nullable=False),
        sa.Column('recipient', sa.String(length=200), nullable=True),
        sa.Column('subject', sa.String(length=300), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('message_id', sa.String(length=200), nullable=True),
        sa.Column('claimed_at', UTCDateTime(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('sent_at', UTCDateTime(), nullable=True),
        sa.Column('read_at', UTCDateTime(), nullable=True),
        sa.Column('read_by', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_notification_vorgang_id', 'notification', ['vorgang_id'])
    op.create_index('ix_notification_department', 'notification', ['department'])
    op.create_index('ix_notification_created_at', 'notification', ['created_at'])
    op.create_index('ix_notification_inbox', 'notification', ['department', 'audience', 'id'])
    op.create_table(
        'print_batch',
        sa.Column('batch_date', sa.Date(), nullable=False),
        sa.Column('dispatch_ids', sa.JSON(), nullable=False),
        sa.Column('letters', sa.Integer(), nullable=False),
        sa.Column('pages', sa.Integer(), nullable=False),
        sa.Column('bucket', sa.String(length=64), nullable=False),
        sa.Column('object_key', sa.String(length=200), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('printed_by', sa.String(length=200), nullable=False),
        sa.Column('printed_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('batch_date'),
    )


def downgrade() -> None:
    op.drop_table('print_batch')
    op.drop_index('ix_notification_inbox', table_name='notification')
    op.drop_index('ix_notification_created_at', table_name='notification')
    op.drop_index('ix_notification_department', table_name='notification')
    op.drop_index('ix_notification_vorgang_id', table_name='notification')
    op.drop_table('notification')
    with op.batch_alter_table('dispatch') as t:
        t.drop_index('ix_dispatch_document')
        t.drop_index('ix_dispatch_batch')
        for col in ('printed_at', 'batch_date', 'message_id', 'sent_at', 'claimed_at', 'last_error', 'attempts',
                    'sha256', 'recipient', 'decision', 'rule', 'status'):
            t.drop_column(col)
