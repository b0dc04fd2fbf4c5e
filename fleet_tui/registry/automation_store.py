"""Schedules, maintenance windows, policies and alerts in the registry (the rules live in
``domain/schedule.py``, ``domain/policy.py`` and ``domain/alerts.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fleet_tui.registry.errors import Conflict, NotFound
from fleet_tui.registry.models import Alert, Job, JobExecution, MaintenanceWindow, Policy, Schedule

SCHEDULE = Schedule.__table__  # type: ignore[attr-defined]
WINDOW = MaintenanceWindow.__table__  # type: ignore[attr-defined]
POLICY = Policy.__table__  # type: ignore[attr-defined]
ALERT = Alert.__table__  # type: ignore[attr-defined]
JOB = Job.__table__  # type: ignore[attr-defined]
EXECUTION = JobExecution.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class FirmwareStart:
    """A device's latest firmware execution (policies' ``updated_within_s`` and
    ``rollback``)."""

    job_id: str
    device_id: str
    status: str
    started_at: float
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    id: str
    kind: str
    spec: dict[str, Any]
    at: float | None
    cron: str | None
    timezone: str
    next_run: float | None
    enabled: bool
    last_run: float | None
    last_result: dict[str, Any] | None
    created_by: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class PolicyRow:
    name: str
    definition: dict[str, Any]
    source: str
    enabled: bool
    dry_run: bool
    fired_at: list[float]
    updated_by: str
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    key: str
    kind: str
    severity: str
    group_name: str | None
    subject: str
    message: str
    details: dict[str, Any]
    status: str
    count: int
    raised_at: float
    last_seen: float
    resolved_at: float | None
    notified: str | None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _schedule(r: Any) -> ScheduleRow:
    return ScheduleRow(r.id, r.kind, dict(r.spec), r.at, r.cron, r.timezone, r.next_run,
                       bool(r.enabled), r.last_run,
                       dict(r.last_result) if r.last_result else None, r.created_by,
                       r.created_at)


def _policy(r: Any) -> PolicyRow:
    return PolicyRow(r.name, dict(r.definition), r.source, bool(r.enabled), bool(r.dry_run),
                     [float(t) for t in r.fired_at or []], r.updated_by, r.updated_at)


def _alert(r: Any) -> AlertRow:
    return AlertRow(r.id, r.key, r.kind, r.severity, r.group_name, r.subject, r.message,
                    dict(r.details), r.status, r.count, r.raised_at, r.last_seen,
                    r.resolved_at, r.notified)


class AutomationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _conn(self, conn: Connection | None) -> Any:
        return _Borrowed(conn) if conn is not None else self.engine.connect()

    # ------------------------------------------------------------- schedules

    def insert_schedule(self, conn: Connection, values: Mapping[str, Any]) -> None:
        if conn.execute(sa.select(SCHEDULE.c.id).where(SCHEDULE.c.id == values["id"])).first():
            raise Conflict(f"schedule {values['id']!r} already exists")
        conn.execute(SCHEDULE.insert().values(**values))

    def get_schedule(self, schedule_id: str, conn: Connection | None = None) -> ScheduleRow:
        with self._conn(conn) as c:
            row = c.execute(sa.select(SCHEDULE).where(SCHEDULE.c.id == schedule_id)).first()
        if row is None:
            raise NotFound(f"no schedule {schedule_id!r}")
        return _schedule(row)

    def list_schedules(self, conn: Connection | None = None) -> list[ScheduleRow]:
        with self._conn(conn) as c:
            return [_schedule(r) for r in c.execute(sa.select(SCHEDULE).order_by(SCHEDULE.c.id))]

    def due_schedules(self, conn: Connection, now: float) -> list[ScheduleRow]:
        return [_schedule(r) for r in conn.execute(
            sa.select(SCHEDULE).where(SCHEDULE.c.enabled.is_(True),
                                      SCHEDULE.c.next_run.is_not(None),
                                      SCHEDULE.c.next_run <= now).order_by(SCHEDULE.c.next_run))]

    def update_schedule(self, conn: Connection, schedule_id: str, **values: Any) -> None:
        conn.execute(SCHEDULE.update().where(SCHEDULE.c.id == schedule_id).values(**values))

    def delete_schedule(self, conn: Connection, schedule_id: str) -> None:
        if not conn.execute(SCHEDULE.delete().where(SCHEDULE.c.id == schedule_id)).rowcount:
            raise NotFound(f"no schedule {schedule_id!r}")

    def latest_firmware_starts(self, conn: Connection) -> dict[str, FirmwareStart]:
        rows = conn.execute(
            sa.select(EXECUTION.c.job_id, EXECUTION.c.device_id, EXECUTION.c.status,
                      EXECUTION.c.started_at, EXECUTION.c.params)
            .join(JOB, JOB.c.id == EXECUTION.c.job_id)
            .where(JOB.c.job_type == "firmware_update", EXECUTION.c.started_at.is_not(None))
            .order_by(EXECUTION.c.started_at))
        return {r.device_id: FirmwareStart(r.job_id, r.device_id, r.status, r.started_at,
                                           dict(r.params or {})) for r in rows}

    # ------------------------------------------------------- maintenance windows

    def set_window(self, conn: Connection, group: str, spec: str, actor: str, now: float
                   ) -> None:
        conn.execute(WINDOW.delete().where(WINDOW.c.group_name == group))
        conn.execute(WINDOW.insert().values(group_name=group, spec=spec, created_by=actor,
                                            created_at=now))

    def delete_window(self, conn: Connection, group: str) -> None:
        if not conn.execute(WINDOW.delete().where(WINDOW.c.group_name == group)).rowcount:
            raise NotFound(f"group {group!r} has no maintenance window")

    def windows(self, conn: Connection | None = None) -> dict[str, str]:
        with self._conn(conn) as c:
            return {r.group_name: r.spec for r in c.execute(sa.select(WINDOW))}

    # ------------------------------------------------------------- policies

    def upsert_policy(self, conn: Connection, name: str, definition: Mapping[str, Any], *,
                      source: str, enabled: bool, dry_run: bool, actor: str, now: float,
                      keep_state: bool = True) -> None:
        """Insert or replace a definition; an existing policy keeps its enabled and
        dry-run switches (an operator's toggle outlives a reload) unless told otherwise."""
        row = conn.execute(sa.select(POLICY).where(POLICY.c.name == name)).first()
        if row is None:
            conn.execute(POLICY.insert().values(
                name=name, definition=dict(definition), source=source, enabled=enabled,
                dry_run=dry_run, fired_at=[], updated_by=actor, updated_at=now))
            return
        values: dict[str, Any] = {"definition": dict(definition), "source": source,
                                  "updated_by": actor, "updated_at": now}
        if not keep_state:
            values.update(enabled=enabled, dry_run=dry_run)
        conn.execute(POLICY.update().where(POLICY.c.name == name).values(**values))

    def get_policy(self, name: str, conn: Connection | None = None) -> PolicyRow:
        with self._conn(conn) as c:
            row = c.execute(sa.select(POLICY).where(POLICY.c.name == name)).first()
        if row is None:
            raise NotFound(f"no policy {name!r}")
        return _policy(row)

    def list_policies(self, conn: Connection | None = None) -> list[PolicyRow]:
        with self._conn(conn) as c:
            return [_policy(r) for r in c.execute(sa.select(POLICY).order_by(POLICY.c.name))]

    def update_policy(self, conn: Connection, name: str, **values: Any) -> None:
        if not conn.execute(POLICY.update().where(POLICY.c.name == name)
                            .values(**values)).rowcount:
            raise NotFound(f"no policy {name!r}")

    def delete_policy(self, conn: Connection, name: str) -> None:
        if not conn.execute(POLICY.delete().where(POLICY.c.name == name)).rowcount:
            raise NotFound(f"no policy {name!r}")

    # --------------------------------------------------------------- alerts

    def open_alerts(self, conn: Connection, kinds: Sequence[str] | None = None,
                    key_prefix: str | None = None) -> dict[str, AlertRow]:
        stmt = sa.select(ALERT).where(ALERT.c.status == "open")
        if kinds is not None:
            stmt = stmt.where(ALERT.c.kind.in_(list(kinds)))
        if key_prefix is not None:
            stmt = stmt.where(ALERT.c.key.startswith(key_prefix, autoescape=True))
        return {r.key: _alert(r) for r in conn.execute(stmt)}

    def insert_alert(self, conn: Connection, values: Mapping[str, Any]) -> int:
        key = conn.execute(ALERT.insert().values(**values)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def update_alerts(self, conn: Connection, ids: Sequence[int], **values: Any) -> None:
        if ids:
            conn.execute(ALERT.update().where(ALERT.c.id.in_(list(ids))).values(**values))

    def refresh_alert(self, conn: Connection, alert_id: int, now: float, severity: str,
                      message: str, details: Mapping[str, Any]) -> None:
        conn.execute(ALERT.update().where(ALERT.c.id == alert_id).values(
            count=ALERT.c.count + 1, last_seen=now, severity=severity, message=message,
            details=dict(details)))

    def touch_alerts(self, conn: Connection, ids: Sequence[int], now: float) -> None:
        """Alerts seen again, unchanged: one statement for all of them."""
        for i in range(0, len(ids), 5000):
            conn.execute(ALERT.update().where(ALERT.c.id.in_(list(ids[i:i + 5000])))
                         .values(count=ALERT.c.count + 1, last_seen=now))

    def get_alert(self, alert_id: int, conn: Connection | None = None) -> AlertRow:
        with self._conn(conn) as c:
            row = c.execute(sa.select(ALERT).where(ALERT.c.id == alert_id)).first()
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        return _alert(row)

    def list_alerts(self, *, status: str | None = None, group: str | None = None,
                    kind: str | None = None, since: float | None = None, limit: int = 100,
                    conn: Connection | None = None) -> list[AlertRow]:
        stmt = sa.select(ALERT)
        if status:
            stmt = stmt.where(ALERT.c.status == status)
        if group:
            stmt = stmt.where(ALERT.c.group_name == group)
        if kind:
            stmt = stmt.where(ALERT.c.kind == kind)
        if since is not None:
            stmt = stmt.where(ALERT.c.last_seen >= since)
        stmt = stmt.order_by(ALERT.c.id.desc()).limit(limit)
        with self._conn(conn) as c:
            return [_alert(r) for r in c.execute(stmt)]

    def counts_by_group(self, since: float, conn: Connection | None = None
                        ) -> dict[str, int]:
        """Alerts per group seen since ``since`` (open or resolved): the guide's
        ``recent_alerts``."""
        stmt = (sa.select(ALERT.c.group_name, sa.func.count())
                .where(ALERT.c.last_seen >= since, ALERT.c.group_name.is_not(None))
                .group_by(ALERT.c.group_name))
        with self._conn(conn) as c:
            return {g: int(n) for g, n in c.execute(stmt)}

    def undelivered(self, limit: int = 100) -> list[AlertRow]:
        with self.engine.connect() as c:
            return [_alert(r) for r in c.execute(
                sa.select(ALERT).where(sa.or_(ALERT.c.notified.is_(None),
                                              ALERT.c.notified != ALERT.c.status))
                .order_by(ALERT.c.id).limit(limit))]

    def mark_delivered(self, alert_id: int, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(ALERT.update().where(ALERT.c.id == alert_id, ALERT.c.status == status)
                      .values(notified=status))


class _Borrowed:
    """A caller's connection used as a context manager without closing it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Connection:
        return self.conn

    def __exit__(self, *_: object) -> None:
        return None
