"""full-text search: dokument_search (PostgreSQL tsvector + GIN, SQLite FTS5), backfilled

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        'dokument_search',
        sa.Column('id', sa.Integer(), nullable=False, autoincrement=True),
        sa.Column('dokument_id', sa.String(length=32), nullable=False),
        sa.Column('doc_date', sa.DateTime(timezone=True), nullable=False),
        sa.Column('vorgang_id', sa.String(length=64), nullable=True),
        sa.Column('department', sa.String(length=64), nullable=True),
        sa.Column('service_key', sa.String(length=32), nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('integrator', sa.String(length=200), nullable=True),
        sa.Column('public', sa.Boolean(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('confidential', sa.Boolean(), nullable=False),
        sa.Column('confidential_roles', sa.JSON(), nullable=False),
        sa.Column('akte_closed', sa.Boolean(), nullable=False),
        sa.Column('is_letter', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['dokument_id'], ['dokument.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dokument_id'),
    )
    op.create_index('ix_dokument_search_doc_date', 'dokument_search', ['doc_date'])
    if pg:
        op.execute("ALTER TABLE dokument_search ADD COLUMN tsv tsvector NOT NULL DEFAULT ''::tsvector")
        # keep the vector in the row (compressed) rather than out of line in TOAST: ranking reads it
        op.execute("ALTER TABLE dokument_search ALTER COLUMN tsv SET STORAGE MAIN")
        op.execute("CREATE INDEX ix_dokument_search_tsv ON dokument_search USING gin (tsv)")
    else:
        op.execute("CREATE VIRTUAL TABLE dokument_fts USING fts5(meta, body, parts, "
                   "tokenize = 'unicode61 remove_diacritics 2')")
    _backfill()


def _backfill() -> None:
    from sqlalchemy.orm import Session

    from eakte import search

    session = Session(bind=op.get_bind())
    search.backfill(session)
    session.flush()


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE IF EXISTS dokument_fts")
    op.drop_index('ix_dokument_search_doc_date', table_name='dokument_search')
    op.drop_table('dokument_search')
