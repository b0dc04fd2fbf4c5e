"""SQLModel tables of the registry. Schema changes go through Alembic (``migrations/``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

# Tag.source: operator tags are set by people; reported tags/attributes come from the shadow.
SOURCE_OPERATOR = "o"
SOURCE_REPORTED = "r"

# Ids of append-only tables: 64-bit on PostgreSQL (migration 0005). SQLite keeps INTEGER,
# the 64-bit rowid alias that numbers rows itself (a BIGINT key would not).
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Device(SQLModel, table=True):
    __tablename__ = "device"
    __table_args__ = (
        # SQLite: the ids alone, for deep pages. The table is clustered on id, so an
        # OFFSET over it steps through whole device rows; this index's entries are a
        # quarter of their size (see Registry.list_devices). PostgreSQL's primary key is
        # such an index already.
        sa.Index("ix_device_id", "id").ddl_if(dialect="sqlite"),
        {"sqlite_with_rowid": False},
    )

    id: str = Field(primary_key=True, max_length=128)
    hardware_rev: str | None = Field(default=None, max_length=64, index=True)
    firmware_version: str | None = Field(default=None, max_length=64)
    # Sortable version key (see domain.version.version_key): version comparisons in SQL.
    fw_key: str | None = Field(default=None, max_length=96, index=True)
    online: bool = Field(default=False, index=True)
    last_seen: float | None = None
    health: str | None = Field(default=None, max_length=16, index=True)
    telemetry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: float = Field(default=0.0)


class Tag(SQLModel, table=True):
    """Operator tags and reported attributes, one row per key: indexed, not a JSON blob."""

    __tablename__ = "tag"
    __table_args__ = (
        sa.Index("ix_tag_lookup", "source", "key", "value", "device_id"),
        # Most tags are not numbers: index only those that are.
        sa.Index("ix_tag_num", "source", "key", "num", sqlite_where=sa.text("num IS NOT NULL"),
                 postgresql_where=sa.text("num IS NOT NULL")),
        # Clustered on the primary key: no second copy of every row in a rowid b-tree.
        {"sqlite_with_rowid": False},
    )

    device_id: str = Field(
        sa_column=Column(
            sa.String(128), sa.ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
        )
    )
    source: str = Field(sa_column=Column(sa.String(1), primary_key=True))
    key: str = Field(sa_column=Column(sa.String(128), primary_key=True))
    value: str = Field(max_length=512)
    num: float | None = None
    vkey: str | None = Field(default=None, max_length=96)


class Group(SQLModel, table=True):
    __tablename__ = "fleet_group"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    # static: listed members; dynamic: a stored query; folder: only its subgroups' devices.
    kind: str = Field(max_length=16)
    query: str | None = None
    parent_id: int | None = Field(default=None, foreign_key="fleet_group.id", index=True)
    description: str = ""
    created_at: float = 0.0


class GroupMember(SQLModel, table=True):
    __tablename__ = "group_member"

    group_id: int = Field(
        sa_column=Column(
            sa.Integer, sa.ForeignKey("fleet_group.id", ondelete="CASCADE"), primary_key=True
        )
    )
    device_id: str = Field(
        sa_column=Column(
            sa.String(128),
            sa.ForeignKey("device.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        )
    )


class Shadow(SQLModel, table=True):
    """A stored shadow document; ``name`` is '' for the classic shadow."""

    __tablename__ = "shadow"

    thing_id: str = Field(primary_key=True, max_length=128)
    name: str = Field(primary_key=True, max_length=64, default="")
    version: int = 0
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: float = 0.0


class Release(SQLModel, table=True):
    """A firmware release from the manifest."""

    __tablename__ = "release"

    version: str = Field(primary_key=True, max_length=64)
    vkey: str = Field(max_length=96, index=True)
    url: str
    sha256: str = Field(max_length=64)
    size: int
    hardware_revs: list[str] = Field(sa_column=Column(JSON, nullable=False))
    desired_keys: list[str] = Field(sa_column=Column(JSON, nullable=False))
    notes: str = ""
    created_at: float = 0.0


class Job(SQLModel, table=True):
    __tablename__ = "job"

    id: str = Field(primary_key=True, max_length=64)
    job_type: str = Field(max_length=32)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    target: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    settings: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16, index=True)
    reason: str = ""
    rollout_id: str | None = Field(default=None, max_length=64, index=True)
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class JobExecution(SQLModel, table=True):
    __tablename__ = "job_execution"
    __table_args__ = (
        sa.Index("ix_job_execution_status", "job_id", "status"),
        sa.Index("ix_job_execution_seq", "job_id", "seq"),
        sa.Index("ix_job_execution_notified", "job_id", "notified_at"),
        sa.Index("ix_job_execution_state", "status", "job_id"),
        # Timeouts: a job's in-progress executions by start time, without a scan.
        sa.Index("ix_job_execution_started", "job_id", "status", "started_at", "notified_at"),
    )

    job_id: str = Field(
        sa_column=Column(
            sa.String(64), sa.ForeignKey("job.id", ondelete="CASCADE"), primary_key=True
        )
    )
    device_id: str = Field(sa_column=Column(sa.String(128), primary_key=True, index=True))
    status: str = Field(max_length=16)
    # Release order within the job (deterministic; the rate limiter walks it).
    seq: int = 0
    attempt: int = 0
    version_number: int = 0
    status_details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # Per-device parameters (a rollback's target version differs per device).
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    skip_reason: str | None = None
    queued_at: float = 0.0
    # When the device was told (notify-next or desired state): the durable basis of the
    # rate limit, so a restarted engine keeps to it.
    notified_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0


class Rollout(SQLModel, table=True):
    __tablename__ = "rollout"

    id: str = Field(primary_key=True, max_length=64)
    release_version: str = Field(max_length=64)
    previous_version: str | None = Field(default=None, max_length=64)
    group_name: str = Field(max_length=128)
    status: str = Field(max_length=16, index=True)
    plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    gates: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    current_wave: int = 0
    reason: str = ""
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class RolloutWave(SQLModel, table=True):
    __tablename__ = "rollout_wave"

    rollout_id: str = Field(
        sa_column=Column(
            sa.String(64), sa.ForeignKey("rollout.id", ondelete="CASCADE"), primary_key=True
        )
    )
    index: int = Field(sa_column=Column(sa.Integer, primary_key=True))
    name: str = Field(max_length=64)
    status: str = Field(max_length=16)
    device_ids: list[str] = Field(sa_column=Column(JSON, nullable=False))
    job_id: str | None = Field(default=None, max_length=64)
    evidence: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    approvals: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    started_at: float | None = None
    finished_at: float | None = None


class MetricBucket(SQLModel, table=True):
    """One time bucket of one telemetry metric of one device (for sparklines)."""

    __tablename__ = "metric_bucket"
    __table_args__ = (sa.Index("ix_metric_bucket_start", "width", "start"),)

    device_id: str = Field(sa_column=Column(sa.String(128), primary_key=True))
    metric: str = Field(sa_column=Column(sa.String(32), primary_key=True))
    width: int = Field(sa_column=Column(sa.Integer, primary_key=True))
    start: int = Field(sa_column=Column(sa.Integer, primary_key=True))
    count: int = 0
    total: float = 0.0
    min: float = 0.0
    max: float = 0.0
    last: float = 0.0


class AuditEntry(SQLModel, table=True):
    """Append-only audit log; each entry carries the hash of the previous one."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, sa_column=Column(BIGINT_ID, primary_key=True))
    ts: float
    actor: str = Field(max_length=128)
    role: str = Field(default="", max_length=32)
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=256)
    details: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class Lease(SQLModel, table=True):
    """A named lease (e.g. the job/rollout engine) held by one worker until it expires."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: float


# ------------------------------------------------------------ automation (migration 0003)


class Schedule(SQLModel, table=True):
    """A job or rollout to start at a time (``at``) or on a cron expression in a zone."""

    __tablename__ = "schedule"

    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)  # job | rollout
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    at: float | None = None
    cron: str | None = Field(default=None, max_length=128)
    timezone: str = Field(default="UTC", max_length=64)
    next_run: float | None = Field(default=None, index=True)
    enabled: bool = True
    last_run: float | None = None
    last_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_by: str = ""
    created_at: float = 0.0


class MaintenanceWindow(SQLModel, table=True):
    """When disruptive work may start on a group's devices, e.g. ``Mon-Fri 01:00-04:00
    Europe/Berlin``."""

    __tablename__ = "maintenance_window"

    group_name: str = Field(primary_key=True, max_length=128)
    spec: str = Field(max_length=256)
    created_by: str = ""
    created_at: float = 0.0


class Policy(SQLModel, table=True):
    """A ``when <condition> then <action>`` rule (from the policy file or the console)."""

    __tablename__ = "policy"

    name: str = Field(primary_key=True, max_length=64)
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    source: str = Field(default="console", max_length=16)
    enabled: bool = True
    dry_run: bool = False
    # Firing times within the last hour: the durable basis of the rate limit.
    fired_at: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_by: str = ""
    updated_at: float = 0.0


class Alert(SQLModel, table=True):
    """An alert, deduplicated by ``key`` while open; ``notified`` is the last status the
    webhook accepted (delivery is at least once)."""

    __tablename__ = "alert"
    __table_args__ = (sa.Index("ix_alert_key_status", "key", "status"),
                      sa.Index("ix_alert_group_raised", "group_name", "raised_at"))

    id: int | None = Field(default=None, sa_column=Column(BIGINT_ID, primary_key=True))
    key: str = Field(max_length=256)
    kind: str = Field(max_length=32)
    severity: str = Field(max_length=16)
    group_name: str | None = Field(default=None, max_length=128)
    subject: str = Field(default="", max_length=256)
    message: str = ""
    details: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(default="open", max_length=16, index=True)
    count: int = 1
    raised_at: float = 0.0
    last_seen: float = 0.0
    resolved_at: float | None = None
    notified: str | None = Field(default=None, max_length=16)
