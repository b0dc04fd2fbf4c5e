"""automation: schedules, maintenance windows, policies, alerts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'schedule',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('at', sa.Float(), nullable=True),
        sa.Column('cron', sa.String(length=128), nullable=True),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('next_run', sa.Float(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('last_run', sa.Float(), nullable=True),
        sa.Column('last_result', sa.JSON(), nullable=True),
        sa.Column('created_by', sa.String(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_schedule_next_run', 'schedule', ['next_run'], unique=False)
    op.create_table(
        'maintenance_window',
        sa.Column('group_name', sa.String(length=128), nullable=False),
        sa.Column('spec', sa.String(length=256), nullable=False),
        sa.Column('created_by', sa.String(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('group_name'),
    )
    op.create_table(
        'policy',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('definition', sa.JSON(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('dry_run', sa.Boolean(), nullable=False),
        sa.Column('fired_at', sa.JSON(), nullable=False),
        sa.Column('updated_by', sa.String(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'alert',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=256), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('severity', sa.String(length=16), nullable=False),
        sa.Column('group_name', sa.String(length=128), nullable=True),
        sa.Column('subject', sa.String(length=256), nullable=False),
        sa.Column('message', sa.String(), nullable=False),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('raised_at', sa.Float(), nullable=False),
        sa.Column('last_seen', sa.Float(), nullable=False),
        sa.Column('resolved_at', sa.Float(), nullable=True),
        sa.Column('notified', sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_alert_key_status', 'alert', ['key', 'status'], unique=False)
    op.create_index('ix_alert_group_raised', 'alert', ['group_name', 'raised_at'], unique=False)
    op.create_index('ix_alert_status', 'alert', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_alert_status', table_name='alert')
    op.drop_index('ix_alert_group_raised', table_name='alert')
    op.drop_index('ix_alert_key_status', table_name='alert')
    op.drop_table('alert')
    op.drop_table('policy')
    op.drop_table('maintenance_window')
    op.drop_index('ix_schedule_next_run', table_name='schedule')
    op.drop_table('schedule')
