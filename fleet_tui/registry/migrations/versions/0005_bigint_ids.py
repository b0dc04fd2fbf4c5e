"""bigint ids: audit_log.id and alert.id (and alert's sequence) are 64-bit on PostgreSQL

Both tables only grow; a SERIAL key stops at 2^31 - 1 rows. SQLite's INTEGER primary key
is the 64-bit rowid already, so there this revision changes nothing. (PostgreSQL rewrites
both tables once.)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TABLES = ('audit_log', 'alert')


def _retype(column: sa.types.TypeEngine[int], sequence: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    for table in TABLES:
        op.alter_column(table, 'id', type_=column, existing_nullable=False)
        seq = bind.execute(sa.text('SELECT pg_get_serial_sequence(:t, :c)'),
                           {'t': table, 'c': 'id'}).scalar()
        if seq is not None:  # audit_log numbers its entries itself, alert uses it
            op.execute(f'ALTER SEQUENCE {seq} AS {sequence}')


def upgrade() -> None:
    _retype(sa.BigInteger(), 'bigint')


def downgrade() -> None:
    _retype(sa.Integer(), 'integer')
