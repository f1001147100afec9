"""payments: provider scenarios, expiry and refunds in the sandbox; our payment ledger
(payment_record, payment_receipt, payment_refund); webhook outcomes; amounts on the Vorgang

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 13:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eakte.models import UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sandbox_payment') as t:
        t.add_column(sa.Column('return_url', sa.Text(), nullable=True))
        t.add_column(sa.Column('scenario', sa.String(length=32), nullable=True))
        t.add_column(sa.Column('expires_at', UTCDateTime(), nullable=True))
        t.add_column(sa.Column('refunded_cents', sa.Integer(), nullable=False, server_default='0'))
        t.create_index('ix_sandbox_payment_expires_at', ['expires_at'])
    op.create_table(
        'sandbox_refund',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('payment_id', sa.String(length=32), sa.ForeignKey('sandbox_payment.id'), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=False, unique=True),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('reason', sa.String(length=300), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
    )
    op.create_index('ix_sandbox_refund_payment_id', 'sandbox_refund', ['payment_id'])

    with op.batch_alter_table('webhook_delivery') as t:
        t.add_column(sa.Column('case_id', sa.String(length=64), nullable=True))
        t.add_column(sa.Column('status', sa.String(length=16), nullable=True))
        t.add_column(sa.Column('amount_cents', sa.Integer(), nullable=True))
        t.add_column(sa.Column('outcome', sa.String(length=24), nullable=True))
    # every delivery stored before had been signalled to its case (it was stored after the signal)
    op.execute("UPDATE webhook_delivery SET outcome = 'signalled'")

    op.create_table(
        'payment_record',
        sa.Column('payment_id', sa.String(length=64), primary_key=True),
        sa.Column('case_id', sa.String(length=64), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=False, unique=True),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('payment_url', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('refunded_cents', sa.Integer(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
    )
    op.create_index('ix_payment_record_case_id', 'payment_record', ['case_id'])
    op.create_table(
        'payment_receipt',
        sa.Column('payment_id', sa.String(length=64), primary_key=True),
        sa.Column('case_id', sa.String(length=64), nullable=False),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('event_id', sa.String(length=64), nullable=True),
        sa.Column('received_at', UTCDateTime(), nullable=False),
    )
    op.create_index('ix_payment_receipt_case_id', 'payment_receipt', ['case_id'])
    op.create_table(
        'payment_refund',
        sa.Column('refund_id', sa.String(length=64), primary_key=True),
        sa.Column('idempotency_key', sa.String(length=200), nullable=False, unique=True),
        sa.Column('case_id', sa.String(length=64), nullable=False),
        sa.Column('payment_id', sa.String(length=64), nullable=False),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
    )
    op.create_index('ix_payment_refund_case_id', 'payment_refund', ['case_id'])
    op.create_index('ix_payment_refund_payment_id', 'payment_refund', ['payment_id'])

    with op.batch_alter_table('vorgang') as t:
        t.add_column(sa.Column('payment_amount_cents', sa.Integer(), nullable=True))
        t.add_column(sa.Column('refunded_cents', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('vorgang') as t:
        t.drop_column('refunded_cents')
        t.drop_column('payment_amount_cents')
    op.drop_table('payment_refund')
    op.drop_table('payment_receipt')
    op.drop_table('payment_record')
    with op.batch_alter_table('webhook_delivery') as t:
        for col in ('outcome', 'amount_cents', 'status', 'case_id'):
            t.drop_column(col)
    op.drop_table('sandbox_refund')
    with op.batch_alter_table('sandbox_payment') as t:
        t.drop_index('ix_sandbox_payment_expires_at')
        for col in ('refunded_cents', 'expires_at', 'scenario', 'return_url'):
            t.drop_column(col)
