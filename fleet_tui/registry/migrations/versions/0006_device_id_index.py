"""device ids alone, for deep pages on SQLite

The device table is clustered on id (WITHOUT ROWID), so ``ORDER BY id LIMIT 50 OFFSET
250000`` stepped through 250k whole device rows; the page now finds its ids in this index
(entries a quarter of the rows' size) and reads those 50 rows by key. PostgreSQL's
primary-key index is already such an index: nothing to add there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:30:00
"""
from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index('ix_device_id', 'device', ['id'])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index('ix_device_id', table_name='device')
