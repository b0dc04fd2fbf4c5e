"""The jobs API that the CLI, the console and the HTTP API call: plan (dry run), create
and cancel jobs. Creation resolves the targets and gates every device before anything is
recorded or sent; the running engine (``service/jobs.py``) picks a new job up on its next
tick. Every call that changes something lands in the audit log with who did it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_tui.domain import roles
from fleet_tui.domain.jobs import (
    CANCELED,
    IN_PROGRESS,
    JOB_ACTIVE,
    JOB_CANCELED,
    JOB_IN_PROGRESS,
    QUEUED,
    SKIPPED,
    JobError,
    JobSettings,
    ReleaseFacts,
    TargetFacts,
    job_document,
    skip_reason,
    validate_targets,
)
from fleet_tui.registry.jobs_store import NewExecution
from fleet_tui.registry.registry import Registry
from fleet_tui.registry.targets import TargetRow, resolve_targets


@dataclass(frozen=True, slots=True)
class Target:
    """What a job targets: a group, a query, or devices by id (resolved at creation)."""

    group: str | None = None
    where: str | None = None
    device_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.group is None and self.where is None and self.device_ids is None:
            raise JobError("target: give a group, a query or device ids")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.group is not None:
            d["group"] = self.group
        if self.where is not None:
            d["where"] = self.where
        if self.device_ids is not None:
            d["devices"] = len(self.device_ids)
        return d


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    role: str = "operator"

    def require(self, action: str) -> None:
        """RoleError (403) unless this actor's role allows ``action``. The engine's own
        decisions (role ``system``) are the rules themselves and need no role."""
        if self.role != SYSTEM_ROLE:
            roles.require(self.role, action)


SYSTEM_ROLE = "system"
ENGINE = Actor("engine", SYSTEM_ROLE)


@dataclass(slots=True)
class JobPlan:
    job_id: str
    job_type: str
    document: dict[str, Any]
    settings: JobSettings
    target: Target
    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (device, reason)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for _, r in self.skipped:
            reasons[r] = reasons.get(r, 0) + 1
        return {"job_id": self.job_id, "type": self.job_type, "document": self.document,
                "target": self.target.to_dict(), "queued": len(self.queued),
                "skipped": len(self.skipped), "skip_reasons": reasons,
                "settings": self.settings.to_dict(),
                "estimated_s": self.estimated_s()}

    def estimated_s(self) -> float | None:
        rate = self.settings.rate_per_minute
        if not self.queued:
            return 0.0
        return len(self.queued) / rate * 60 if rate else None


def release_facts(registry: Registry) -> dict[str, ReleaseFacts]:
    return {r.version: ReleaseFacts(r.version, tuple(r.hardware_revs), tuple(r.desired_keys))
            for r in registry.list_releases()}


def plan_job(
    registry: Registry, job_type: str, params: Mapping[str, Any], target: Target,
    settings: JobSettings | None = None, *, job_id: str | None = None,
    per_device: Mapping[str, Mapping[str, Any]] | None = None,
    rows: Sequence[TargetRow] | None = None, conn: Any = None,
) -> JobPlan:
    """Resolve the targets and gate every device; nothing is written. Inside a
    transaction pass its ``conn``: what it changed (a job just canceled) must count."""
    document = job_document(job_type, params)
    settings = settings or JobSettings()
    if rows is None:
        rows = resolve_targets(registry, group=target.group, where=target.where,
                               device_ids=target.device_ids)
    validate_targets([r.id for r in rows])
    releases = release_facts(registry)
    plan = JobPlan(job_id or new_job_id(job_type), job_type, document, settings, target)
    busy: dict[str, str] = {}
    if job_type == "firmware_update":
        if conn is None:
            with registry.engine.connect() as own:
                busy = registry.jobs.busy_devices(own, [r.id for r in rows], job_type)
        else:
            busy = registry.jobs.busy_devices(conn, [r.id for r in rows], job_type)
    for row in rows:
        doc = {**document, **(per_device or {}).get(row.id, {})}
        if not row.known:
            reason: str | None = "not in the registry"
        elif row.id in busy:
            reason = f"already in active job {busy[row.id]}"
        else:
            reason = skip_reason(job_type, doc, TargetFacts(row.id, row.firmware_version,
                                                            row.hardware_rev), releases)
        if reason is None:
            plan.queued.append(row.id)
            if per_device and row.id in per_device:
                plan.params[row.id] = dict(per_device[row.id])
        else:
            plan.skipped.append((row.id, reason))
    return plan


def new_job_id(job_type: str) -> str:
    return f"{job_type.replace('_', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def create_job(registry: Registry, plan: JobPlan, actor: Actor, *,
               rollout_id: str | None = None, conn: Any = None) -> JobPlan:
    """Record the planned job and its executions (skips included, with their reasons)."""
    actor.require(roles.CREATE_JOB)
    if not plan.queued:
        raise JobError(f"no device can take this job ({len(plan.skipped)} skipped: "
                       + "; ".join(sorted({r for _, r in plan.skipped}))[:300] + ")")
    if conn is None:
        with registry.locked() as own:
            return create_job(registry, plan, actor, rollout_id=rollout_id, conn=own)
    now = time.time()
    executions = [NewExecution(d, QUEUED, None, plan.params.get(d)) for d in plan.queued]
    executions += [NewExecution(d, SKIPPED, r) for d, r in plan.skipped]
    registry.jobs.insert(conn, {
        "id": plan.job_id, "job_type": plan.job_type, "document": plan.document,
        "target": plan.target.to_dict(), "settings": plan.settings.to_dict(),
        "status": JOB_IN_PROGRESS, "reason": "", "rollout_id": rollout_id,
        "created_by": actor.name, "created_at": now, "updated_at": now,
    }, executions)
    registry.audit.append(conn, actor.name, actor.role, "job.create", plan.job_id, {
        "type": plan.job_type, "document": plan.document, "target": plan.target.to_dict(),
        "queued": len(plan.queued), "skipped": len(plan.skipped),
        "rollout": rollout_id}, ts=now)
    return plan


@dataclass(frozen=True, slots=True)
class CancelResult:
    job_id: str
    canceled_queued: int
    canceled_in_progress: int
    left_in_progress: int

    def explain(self) -> str:
        text = (f"job {self.job_id} canceled: {self.canceled_queued} queued executions "
                "canceled")
        if self.canceled_in_progress:
            text += (f", {self.canceled_in_progress} in progress force-canceled (their "
                     "devices' later updates are refused; an update already running on a "
                     "device still finishes there)")
        if self.left_in_progress:
            text += (f"; {self.left_in_progress} in progress keep running to the end "
                     "(cancel --force stops tracking them too)")
        return text


def cancel_job(registry: Registry, job_id: str, actor: Actor, *, force: bool = False,
               reason: str = "", conn: Any = None) -> CancelResult:
    """Cancel queued executions; with ``force`` the in-progress ones too."""
    actor.require(roles.CANCEL_JOB)
    if conn is None:
        with registry.locked() as own:
            return cancel_job(registry, job_id, actor, force=force, reason=reason, conn=own)
    job = registry.jobs.get(job_id, conn)
    if job.status not in JOB_ACTIVE:
        raise JobError(f"job {job_id} is {job.status}: nothing to cancel")
    now = time.time()
    queued = registry.jobs.device_ids(conn, job_id, [QUEUED])
    registry.jobs.transition(conn, job_id, queued, [QUEUED], CANCELED, now,
                             details={"reason": "job canceled"})
    running = registry.jobs.device_ids(conn, job_id, [IN_PROGRESS])
    forced = 0
    if force and running:
        forced = len(registry.jobs.transition(conn, job_id, running, [IN_PROGRESS], CANCELED,
                                              now, details={"reason": "job force-canceled"}))
    registry.jobs.set_status(conn, job_id, JOB_CANCELED,
                             reason or f"canceled by {actor.name}" + (" (force)" if force else ""),
                             now)
    result = CancelResult(job_id, len(queued), forced, 0 if force else len(running))
    registry.audit.append(conn, actor.name, actor.role, "job.cancel", job_id, {
        "force": force, "canceled_queued": result.canceled_queued,
        "canceled_in_progress": forced, "left_in_progress": result.left_in_progress,
        "reason": reason}, ts=now)
    return result
