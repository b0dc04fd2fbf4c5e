"""job engine: execution order, notification and finish times, per-device parameters

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 15:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_execution', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('params', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('notified_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('finished_at', sa.Float(), nullable=True))
        batch_op.create_index('ix_job_execution_seq', ['job_id', 'seq'], unique=False)
        batch_op.create_index('ix_job_execution_notified', ['job_id', 'notified_at'],
                              unique=False)
        batch_op.create_index('ix_job_execution_state', ['status', 'job_id'], unique=False)
        batch_op.create_index('ix_job_execution_started', ['job_id', 'status', 'started_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_execution', schema=None) as batch_op:
        batch_op.drop_index('ix_job_execution_started')
        batch_op.drop_index('ix_job_execution_state')
        batch_op.drop_index('ix_job_execution_notified')
        batch_op.drop_index('ix_job_execution_seq')
        batch_op.drop_column('finished_at')
        batch_op.drop_column('notified_at')
        batch_op.drop_column('params')
        batch_op.drop_column('seq')
