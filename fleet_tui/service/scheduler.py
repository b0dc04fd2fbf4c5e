"""Scheduled jobs and rollouts, and per-group maintenance windows.

A schedule starts a job or a rollout at a time, or on a cron expression in a time zone
(a nightly diagnostic on a group). The engine's tick runs every due schedule inside its
own transaction through the jobs and rollouts API (``job_control``, ``rollouts``), so a
run and the schedule's next time commit together: a restarted engine neither skips nor
repeats one. A run that cannot start (no device can take the job) is recorded with the
reason and the schedule moves on.

Maintenance windows (``Mon-Fri 01:00-04:00 Europe/Berlin``) gate the release step of
disruptive jobs (reboot, firmware, so every rollout wave): a device in a group with a
window is started only while every window that applies to it is open; outside, it stays
queued and the job waits (as hawkBit does). Devices already started run to their end.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fleet_tui.domain import roles
from fleet_tui.domain.jobs import JobError, JobSettings, job_document
from fleet_tui.domain.rollout import Gates, RolloutError, WaveSpec
from fleet_tui.domain.schedule import MaintenanceWindow, ScheduleError, check_cron, next_run, zone
from fleet_tui.registry.automation_store import ScheduleRow
from fleet_tui.registry.errors import NotFound, RegistryError
from fleet_tui.registry.jobs_store import JobRow
from fleet_tui.registry.registry import Registry
from fleet_tui.service.job_control import Actor, Target, create_job, plan_job

log = logging.getLogger(__name__)
KINDS = ("job", "rollout")
DISRUPTIVE = frozenset({"reboot", "firmware_update"})

def _target(spec: Mapping[str, Any]) -> Target:
    t = spec.get("target")
    if not isinstance(t, Mapping):
        raise JobError("target: give {group: ...}, {where: ...} or {devices: [...]}")
    devices = t.get("devices")
    if devices is not None and (not isinstance(devices, list)
                                or not all(isinstance(d, str) for d in devices)):
        raise JobError("target.devices: a list of device ids")
    group, where = t.get("group"), t.get("where")
    if (group is not None and not isinstance(group, str)) or \
            (where is not None and not isinstance(where, str)):
        raise JobError("target.group and target.where are strings")
    return Target(group=group, where=where,
                  device_ids=tuple(devices) if devices is not None else None)

def validate_spec(registry: Registry, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check a schedule's job or rollout spec now, not at 3 a.m."""
    if kind == "job":
        job_type = spec.get("type")
        if not isinstance(job_type, str):
            raise JobError("type: required")
        params = spec.get("params") or {}
        if not isinstance(params, Mapping):
            raise JobError("params: an object")
        job_document(job_type, params)
        JobSettings.from_dict(spec.get("settings") or {})
        target = _target(spec)
        if target.group is not None:
            registry.get_group(target.group)
        if target.where:
            registry.parse_query(target.where)
        return {"type": job_type, "params": dict(params), "target": dict(spec["target"]),
                "settings": dict(spec.get("settings") or {})}
    if kind == "rollout":
        release, group = spec.get("release"), spec.get("group")
        if not isinstance(release, str) or not isinstance(group, str):
            raise RolloutError("release and group: required")
        if spec.get("confirm") != release:
            # As for starting one now: the operator types the version out, here at
            # scheduling time (the scheduler confirms on its behalf when it runs).
            raise RolloutError(f"to schedule, type the release version {release} as "
                               f"confirm (got {spec.get('confirm')!r})")
        registry.get_release(release)
        registry.get_group(group)
        waves = spec.get("waves", "1,10,50,100")
        if not isinstance(waves, str):
            raise RolloutError("waves: e.g. \"1,10,50,100\"")
        WaveSpec.parse(waves)
        Gates.from_dict(spec.get("gates") or {})
        JobSettings.from_dict(spec.get("job_settings") or {})
        return {"release": release, "group": group, "waves": waves, "confirm": release,
                "gates": dict(spec.get("gates") or {}),
                "job_settings": dict(spec.get("job_settings") or {})}
    raise ScheduleError(f"kind: expected one of {', '.join(KINDS)}")

def create_schedule(registry: Registry, kind: str, spec: Mapping[str, Any], actor: Actor, *,
                    at: float | None = None, cron: str | None = None, tz: str = "UTC",
                    schedule_id: str | None = None, now: float | None = None) -> ScheduleRow:
    """A one-shot (``at``) or recurring (``cron``, optionally from ``at`` on) schedule."""
    # Who schedules it answers for it: the scheduler later acts as role "system".
    actor.require(roles.START_ROLLOUT if kind == "rollout" else roles.CREATE_JOB)
    now = time.time() if now is None else now
    if at is None and cron is None:
        raise ScheduleError("give a start time (at) or a cron expression (cron), or both")
    zone(tz)
    if cron is not None:
        check_cron(cron)
    clean = validate_spec(registry, kind, spec)
    sid = schedule_id or f"sched-{kind}-{uuid.uuid4().hex[:8]}"
    first = next_run(at=at, cron=cron, tz=tz, after=now, ran=False)
    with registry.locked() as conn:
        registry.automation.insert_schedule(conn, {
            "id": sid, "kind": kind, "spec": clean, "at": at, "cron": cron, "timezone": tz,
            "next_run": first, "enabled": True, "last_run": None, "last_result": None,
            "created_by": actor.name, "created_at": now})
        registry.audit.append(conn, actor.name, actor.role, "schedule.create", sid,
                              {"kind": kind, "spec": clean, "at": at, "cron": cron,
                               "timezone": tz, "next_run": first}, ts=now)
    return registry.automation.get_schedule(sid)

def delete_schedule(registry: Registry, schedule_id: str, actor: Actor) -> None:
    actor.require(roles.CREATE_JOB)
    with registry.locked() as conn:
        registry.automation.delete_schedule(conn, schedule_id)
        registry.audit.append(conn, actor.name, actor.role, "schedule.delete", schedule_id)

def set_window(registry: Registry, group: str, spec: str, actor: Actor) -> MaintenanceWindow:
    actor.require(roles.EDIT_GROUPS)
    window = MaintenanceWindow.parse(spec)
    registry.get_group(group)
    with registry.locked() as conn:
        registry.automation.set_window(conn, group, window.text, actor.name, time.time())
        registry.audit.append(conn, actor.name, actor.role, "window.set", group,
                              {"window": window.text})
    return window

def delete_window(registry: Registry, group: str, actor: Actor) -> None:
    actor.require(roles.EDIT_GROUPS)
    with registry.locked() as conn:
        registry.automation.delete_window(conn, group)
        registry.audit.append(conn, actor.name, actor.role, "window.delete", group)

def window_status(registry: Registry, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    out = []
    for group, text in sorted(registry.automation.windows().items()):
        w = MaintenanceWindow.parse(text)
        out.append({"group": group, "window": text, "open": w.is_open(now),
                    "next_open": w.next_open(now)})
    return out

class Scheduler:
    """Tick participant: runs due schedules (inside the engine's transaction)."""

    actor = Actor("scheduler", "system")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def tick(self, conn: Any, now: float, result: Any) -> None:
        for s in self.registry.automation.due_schedules(conn, now):
            # A savepoint per run: one that fails leaves the others' work and its own
            # "failed" record in the tick's transaction.
            try:
                with conn.begin_nested():
                    outcome = self._run(conn, s, now)
            except (JobError, RolloutError, RegistryError, ScheduleError, ValueError) as err:
                outcome = {"ok": False, "error": str(err)}
            except Exception as err:  # never let one schedule stop the engine's tick
                log.exception("schedule %s failed", s.id)
                outcome = {"ok": False, "error": f"internal error: {err}"}
            try:
                upcoming = next_run(at=s.at, cron=s.cron, tz=s.timezone, after=now, ran=True)
            except ScheduleError as err:
                upcoming = None
                outcome["error"] = str(err)
            self.registry.automation.update_schedule(
                conn, s.id, last_run=now, last_result=outcome, next_run=upcoming,
                enabled=upcoming is not None)
            self.registry.audit.append(conn, self.actor.name, self.actor.role, "schedule.run",
                                       s.id, {"kind": s.kind, "scheduled_for": s.next_run,
                                              "next_run": upcoming, **outcome}, ts=now)

    def prepare(self, now: float) -> None:
        return None

    def after_tick(self, now: float) -> None:
        return None

    def _run(self, conn: Any, s: ScheduleRow, now: float) -> dict[str, Any]:
        spec = s.spec
        actor = Actor(f"schedule:{s.id}", "system")
        if s.kind == "job":
            plan = plan_job(self.registry, spec["type"], spec.get("params") or {},
                            _target(spec), JobSettings.from_dict(spec.get("settings") or {}),
                            conn=conn)
            create_job(self.registry, plan, actor, conn=conn)
            return {"ok": True, "job": plan.job_id, "queued": len(plan.queued),
                    "skipped": len(plan.skipped)}
        from fleet_tui.service.rollouts import plan_rollout, start_rollout

        gates = Gates.from_dict(spec.get("gates") or {})
        settings = spec.get("job_settings") or {"soak_s": gates.soak_s}
        flight = plan_rollout(self.registry, spec["release"], spec["group"],
                              spec=WaveSpec.parse(spec.get("waves", "1,10,50,100")),
                              gates=gates, job_settings=JobSettings.from_dict(settings))
        start_rollout(self.registry, flight, actor, confirm=flight.release, conn=conn)
        return {"ok": True, "rollout": flight.rollout_id}

class WindowGate:
    """The engine's release gate: which devices of a disruptive job may start now."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: tuple[float, Callable[[str], bool] | None] | None = None

    def __call__(self, conn: Any, job: JobRow, now: float) -> Callable[[str], bool] | None:
        if job.job_type not in DISRUPTIVE:
            return None
        # One tick asks once per disruptive job: compute the closed windows' devices once.
        if self._cache is None or self._cache[0] != now:
            self._cache = (now, self._blocked(conn, now))
        return self._cache[1]

    def _blocked(self, conn: Any, now: float) -> Callable[[str], bool] | None:
        windows = self.registry.automation.windows(conn)
        closed = []
        for group, text in windows.items():
            try:
                if not MaintenanceWindow.parse(text).is_open(now):
                    closed.append(group)
            except ScheduleError:
                log.warning("maintenance window of %s unreadable: %r", group, text)
        if not closed:
            return None
        blocked: set[str] = set()
        for group in closed:
            try:
                ids = self.registry.group_ids(group)
            except NotFound:
                continue  # the group was deleted; its window no longer applies
            blocked.update(conn.execute(ids).scalars())
        if not blocked:
            return None
        return lambda device: device not in blocked
