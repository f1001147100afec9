"""mailroom: channels, duplicates, separator splits, classification and triage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eakte.models import UTCDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mail_item') as t:
        t.add_column(sa.Column('origin', sa.JSON(), nullable=False, server_default='{}'))
        t.add_column(sa.Column('duplicate_of', sa.String(length=64), nullable=True))
        t.add_column(sa.Column('parent_id', sa.String(length=64), nullable=True))
        t.add_column(sa.Column('match_method', sa.String(length=24), nullable=True))
        t.add_column(sa.Column('department', sa.String(length=64), nullable=True))
        t.add_column(sa.Column('suggestions', sa.JSON(), nullable=False, server_default='[]'))
        t.create_index('ix_mail_item_duplicate_of', ['duplicate_of'])
        t.create_index('ix_mail_item_parent_id', ['parent_id'])
        t.create_index('ix_mail_item_department', ['department'])
        t.create_index('ix_mail_item_channel_sha256', ['channel', 'sha256'])
    with op.batch_alter_table('dokument') as t:
        t.add_column(sa.Column('mail_item_id', sa.String(length=64), nullable=True))
        t.create_index('ix_dokument_mail_item_id', ['mail_item_id'])
    with op.batch_alter_table('vorgang') as t:
        t.add_column(sa.Column('applicant_ref', sa.String(length=16), nullable=True))
        t.create_unique_constraint('uq_vorgang_applicant_ref', ['applicant_ref'])
    op.execute("UPDATE dokument SET mail_item_id = (SELECT m.id FROM mail_item m WHERE m.dokument_id = dokument.id)")
    op.create_table(
        'mail_routing_decision',
        sa.Column('id', sa.Integer(), nullable=False, autoincrement=True),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('item_id', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('learn', sa.Boolean(), nullable=False),
        sa.Column('service_key', sa.String(length=32), nullable=True),
        sa.Column('department', sa.String(length=64), nullable=True),
        sa.Column('terms', sa.JSON(), nullable=False),
        sa.Column('suggested_service_key', sa.String(length=32), nullable=True),
        sa.Column('actor', sa.String(length=200), nullable=False),
        sa.Column('decided_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_mail_routing_decision_item_id', 'mail_routing_decision', ['item_id'])
    op.create_index('ix_mail_routing_decision_service_key', 'mail_routing_decision', ['service_key'])
    op.create_index('ix_mail_routing_decision_decided_at', 'mail_routing_decision', ['decided_at'])


def downgrade() -> None:
    op.drop_table('mail_routing_decision')
    with op.batch_alter_table('vorgang') as t:
        t.drop_constraint('uq_vorgang_applicant_ref', type_='unique')
        t.drop_column('applicant_ref')
    with op.batch_alter_table('dokument') as t:
        t.drop_index('ix_dokument_mail_item_id')
        t.drop_column('mail_item_id')
    with op.batch_alter_table('mail_item') as t:
        for ix in ('ix_mail_item_channel_sha256', 'ix_mail_item_department', 'ix_mail_item_parent_id',
                   'ix_mail_item_duplicate_of'):
            t.drop_index(ix)
        for col in ('suggestions', 'department', 'match_method', 'parent_id', 'duplicate_of', 'origin'):
            t.drop_column(col)
