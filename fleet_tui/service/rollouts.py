"""Phased OTA rollouts: plan (the dry-run flight plan), start, the operator's actions
(approve, halt, resume, cancel, roll back) and the engine step that runs each wave as a
firmware job, judges it by its gates and halts it with the evidence. The rules are in
``domain/rollout.py``; every action and every automatic decision lands in the audit log.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_tui.domain import roles
from fleet_tui.domain.health import mad_outliers
from fleet_tui.domain.jobs import (
    IN_PROGRESS,
    JOB_COMPLETED,
    JOB_IN_PROGRESS,
    JOB_PAUSED,
    SUCCEEDED,
    JobError,
    JobSettings,
    TargetFacts,
    skip_reason,
)
from fleet_tui.domain.rollout import (
    CANCELLED,
    COMPLETED,
    HALTED,
    ROLLED_BACK,
    ROLLING_BACK,
    RUNNING,
    WAITING_APPROVAL,
    WAVE_CANCELED,
    WAVE_FAILED,
    WAVE_PASSED,
    WAVE_PENDING,
    WAVE_RUNNING,
    CohortFacts,
    FlightPlan,
    Gates,
    PlanDevice,
    RolloutError,
    WaveSpec,
    check_action,
    evaluate_wave,
    plan_waves,
)
from fleet_tui.registry.registry import Registry
from fleet_tui.registry.rollouts_store import RolloutRow
from fleet_tui.registry.targets import resolve_targets
from fleet_tui.service.job_control import (
    Actor,
    Target,
    cancel_job,
    create_job,
    plan_job,
    release_facts,
)
from fleet_tui.service.jobs import same_version

SITE_TAG = "site"
ACTION_PERMISSION = {"approve": roles.APPROVE_ROLLOUT, "halt": roles.HALT_ROLLOUT,
                     "resume": roles.RESUME_ROLLOUT, "cancel": roles.CANCEL_ROLLOUT,
                     "rollback": roles.ROLLBACK_ROLLOUT}
COHORT_SAMPLE = 2000
GATE_METRICS = ("heap_free", "cpu_pct", "temp_c")


@dataclass(slots=True)
class RolloutPlan:
    rollout_id: str
    release: str
    group: str
    spec: WaveSpec
    gates: Gates
    job_settings: JobSettings
    flight: FlightPlan
    from_versions: dict[str, str | None] = field(default_factory=dict)

    @property
    def previous_version(self) -> str | None:
        versions = Counter(v for v in self.from_versions.values() if v)
        return versions.most_common(1)[0][0] if versions else None

    def to_dict(self) -> dict[str, Any]:
        return {"rollout_id": self.rollout_id, "release": self.release, "group": self.group,
                "previous_version": self.previous_version, **self.flight.to_dict(),
                "gates": self.gates.to_dict(), "job_settings": self.job_settings.to_dict()}


def plan_rollout(
    registry: Registry, release: str, group: str, *, spec: WaveSpec | None = None,
    gates: Gates | None = None, job_settings: JobSettings | None = None,
    rollout_id: str | None = None,
) -> RolloutPlan:
    """The dry-run flight plan: devices per wave (stratified by hardware and site),
    devices skipped and why, the estimated duration. Nothing is written."""
    spec = spec or WaveSpec()
    gates = gates or Gates()
    job_settings = job_settings or JobSettings(soak_s=gates.soak_s)
    registry.get_release(release)  # NotFound with the version's name
    tag_keys = [SITE_TAG] + ([spec.tag] if spec.tag else [])
    rows = resolve_targets(registry, group=group, tag_keys=tag_keys)
    if not rows:
        raise RolloutError(f"group {group!r} has no devices")
    releases = release_facts(registry)
    with registry.engine.connect() as conn:
        busy = registry.jobs.busy_devices(conn, [r.id for r in rows], "firmware_update")
    devices = []
    for r in rows:
        reason = (f"already in active job {busy[r.id]}" if r.id in busy else
                  skip_reason("firmware_update", {"release": release},
                              TargetFacts(r.id, r.firmware_version, r.hardware_rev), releases))
        devices.append(PlanDevice(r.id, r.hardware_rev, r.tags.get(SITE_TAG),
                                  r.tags.get(spec.tag) if spec.tag else None, reason))
    flight = plan_waves(devices, spec, seed=f"{release}/{group}",
                        rate_per_minute=job_settings.rate_per_minute, soak_s=gates.soak_s)
    return RolloutPlan(rollout_id or new_rollout_id(release), release, group, spec, gates,
                       job_settings, flight,
                       {r.id: r.firmware_version for r in rows})


def new_rollout_id(release: str) -> str:
    return f"rollout-{release}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _locked(registry: Registry, conn: Any) -> Any:
    """The caller's transaction (the engine's tick, for scheduled and policy actions) or
    a locked one of our own."""
    return contextlib.nullcontext(conn) if conn is not None else registry.locked()


def start_rollout(registry: Registry, plan: RolloutPlan, actor: Actor, *, confirm: str,
                  conn: Any = None) -> RolloutRow:
    """Record the rollout and start its first wave. ``confirm`` must be the release
    version, typed by the operator: a fleet-wide action is never one stray key away."""
    actor.require(roles.START_ROLLOUT)
    if confirm != plan.release:
        raise RolloutError(f"to start, type the release version {plan.release} "
                           f"(got {confirm!r})")
    now = time.time()
    with _locked(registry, conn) as conn:
        registry.rollouts.insert(conn, {
            "id": plan.rollout_id, "release_version": plan.release,
            "previous_version": plan.previous_version, "group_name": plan.group,
            "status": RUNNING, "plan": {**plan.flight.to_dict(),
                                        "job_settings": plan.job_settings.to_dict(),
                                        "spec": {"percentages": list(plan.spec.percentages),
                                                 "tag": plan.spec.tag,
                                                 "tag_values": list(plan.spec.tag_values)}},
            "gates": plan.gates.to_dict(), "current_wave": 0, "reason": "",
            "created_by": actor.name, "created_at": now, "updated_at": now,
        }, [{"index": w.index, "name": w.name, "status": WAVE_PENDING,
             "device_ids": list(w.device_ids), "approvals": []} for w in plan.flight.waves])
        registry.audit.append(conn, actor.name, actor.role, "rollout.start", plan.rollout_id, {
            "release": plan.release, "group": plan.group,
            "waves": [(w.name, len(w.device_ids)) for w in plan.flight.waves],
            "skipped": len(plan.flight.skipped), "gates": plan.gates.to_dict()}, ts=now)
        rollout = registry.rollouts.get(plan.rollout_id, conn)
        _start_wave(registry, conn, rollout, 0, actor, now)
        return registry.rollouts.get(plan.rollout_id, conn)


def _start_wave(registry: Registry, conn: Any, rollout: RolloutRow, index: int,
                actor: Actor, now: float) -> None:
    wave = rollout.waves[index]
    settings = JobSettings.from_dict(rollout.plan["job_settings"])
    from_versions = {r.id: r.firmware_version for r in resolve_targets(
        registry, device_ids=wave.device_ids)}
    plan = plan_job(registry, "firmware_update", {"release": rollout.release_version},
                    Target(device_ids=tuple(wave.device_ids)), settings,
                    job_id=f"{rollout.id}-w{index}-{wave.name}",
                    per_device={d: {"from": v} for d, v in from_versions.items() if v},
                    conn=conn)
    if plan.queued:
        create_job(registry, plan, actor, rollout_id=rollout.id, conn=conn)
        job_id: str | None = plan.job_id
    else:
        job_id = None
    registry.rollouts.update_wave(conn, rollout.id, index, status=WAVE_RUNNING,
                                  job_id=job_id, started_at=now, approvals=[])
    registry.rollouts.update(conn, rollout.id, status=RUNNING, current_wave=index,
                             reason="", updated_at=now)
    registry.audit.append(conn, actor.name, actor.role, "rollout.wave.start", rollout.id, {
        "wave": wave.name, "index": index, "job": job_id, "devices": len(plan.queued),
        "skipped": len(plan.skipped)}, ts=now)


def act(registry: Registry, rollout_id: str, action: str, actor: Actor, *,
        reason: str = "", conn: Any = None) -> RolloutRow:
    """An operator's action on a rollout; validated by the role and the state machine,
    audited."""
    if action in ACTION_PERMISSION:
        actor.require(ACTION_PERMISSION[action])
    now = time.time()
    with _locked(registry, conn) as conn:
        rollout = registry.rollouts.get(rollout_id, conn)
        wave = rollout.wave
        gates = Gates.from_dict(rollout.gates)
        final_next = rollout.current_wave + 1 == len(rollout.waves) - 1
        approvals = list(wave.approvals) if wave else []
        effect = check_action(action, rollout.status, approvals=approvals, actor=actor.name,
                              final_wave_next=final_next, two_person=gates.two_person)
        details: dict[str, Any] = {"reason": reason, "wave": wave.name if wave else None,
                                   "from": rollout.status}
        if effect == "approval":
            registry.rollouts.update_wave(conn, rollout.id, rollout.current_wave,
                                          approvals=[*approvals, actor.name])
            details["note"] = "first of two approvals for the final wave"
        elif effect == "start-next":
            if wave is not None:
                registry.rollouts.update_wave(conn, rollout.id, rollout.current_wave,
                                              approvals=[*approvals, actor.name])
            details["approvals"] = [*approvals, actor.name]
            _start_wave(registry, conn, rollout, rollout.current_wave + 1, actor, now)
        elif effect == "halt":
            _pause(registry, conn, rollout, JOB_PAUSED, now)
            registry.rollouts.update(conn, rollout.id, status=HALTED,
                                     reason=reason or f"halted by {actor.name}", updated_at=now)
        elif effect == "resume":
            _pause(registry, conn, rollout, JOB_IN_PROGRESS, now)
            passed = wave is not None and wave.status == WAVE_PASSED
            if wave is not None and wave.status == WAVE_FAILED:
                registry.rollouts.update_wave(conn, rollout.id, rollout.current_wave,
                                              status=WAVE_RUNNING, evidence=None)
            registry.rollouts.update(conn, rollout.id,
                                     status=WAITING_APPROVAL if passed else RUNNING,
                                     reason="", updated_at=now)
        elif effect == "cancel":
            _cancel_wave_job(registry, conn, rollout, actor, force=False)
            registry.rollouts.update(conn, rollout.id, status=CANCELLED,
                                     reason=reason or f"canceled by {actor.name}",
                                     updated_at=now)
        else:
            details.update(_rollback(registry, conn, rollout, actor, now))
        registry.audit.append(conn, actor.name, actor.role, f"rollout.{action}", rollout.id,
                              details, ts=now)
        return registry.rollouts.get(rollout.id, conn)


def _pause(registry: Registry, conn: Any, rollout: RolloutRow, status: str, now: float
           ) -> None:
    wave = rollout.wave
    if wave is not None and wave.job_id:
        registry.jobs.set_status(conn, wave.job_id, status, "", now,
                                 only_from=[JOB_IN_PROGRESS, JOB_PAUSED])


def _cancel_wave_job(registry: Registry, conn: Any, rollout: RolloutRow, actor: Actor, *,
                     force: bool) -> None:
    wave = rollout.wave
    if wave is None or not wave.job_id:
        return
    job = registry.jobs.get(wave.job_id, conn)
    if job.status in (JOB_IN_PROGRESS, JOB_PAUSED):
        cancel_job(registry, wave.job_id, actor, force=force,
                   reason=f"rollout {rollout.id} stopped", conn=conn)


def _rollback(registry: Registry, conn: Any, rollout: RolloutRow, actor: Actor, now: float
              ) -> dict[str, Any]:
    """Cancel the running wave (in-progress devices too), then a job of its own sets each
    updated device's previous version as desired."""
    _cancel_wave_job(registry, conn, rollout, actor, force=True)
    per_device: dict[str, dict[str, Any]] = {}
    for wave in rollout.waves:
        if not wave.job_id:
            continue
        for e in registry.jobs.executions(wave.job_id, status=[SUCCEEDED, IN_PROGRESS,
                                                                "CANCELED"], conn=conn):
            previous = (e.params or {}).get("from")
            if previous:
                per_device[e.device_id] = {"release": previous, "from":
                                           rollout.release_version}
    rows = [r for r in resolve_targets(registry, device_ids=list(per_device))
            if r.firmware_version == rollout.release_version]
    details: dict[str, Any] = {"devices": len(rows)}
    if rows:
        settings = JobSettings.from_dict(rollout.plan["job_settings"])
        settings = JobSettings(concurrency=settings.concurrency,
                               rate_per_minute=settings.rate_per_minute,
                               timeout_s=settings.timeout_s, soak_s=0.0)
        plan = plan_job(registry, "firmware_update", {"release": rollout.release_version},
                        Target(device_ids=tuple(r.id for r in rows)), settings,
                        job_id=f"{rollout.id}-rollback",
                        per_device={r.id: per_device[r.id] for r in rows}, rows=rows,
                        conn=conn)
        if plan.queued:
            create_job(registry, plan, actor, rollout_id=rollout.id, conn=conn)
            details.update(job=plan.job_id, queued=len(plan.queued),
                           skipped=len(plan.skipped))
        registry.rollouts.update(conn, rollout.id, status=ROLLING_BACK,
                                 reason=f"rolling back {len(plan.queued)} devices",
                                 updated_at=now)
    else:
        registry.rollouts.update(conn, rollout.id, status=ROLLED_BACK,
                                 reason="nothing to roll back: no device runs "
                                        f"{rollout.release_version}", updated_at=now)
    return details


# ------------------------------------------------------------------ the engine step

class RolloutEngine:
    """Judges running rollouts on every engine tick (inside the engine's transaction)."""

    def __init__(self, registry: Registry, jobs_engine: Any) -> None:
        self.registry = registry
        self.jobs = jobs_engine

    def _facts(self, device_ids: Sequence[str], now: float, since: float = 0.0
               ) -> dict[str, CohortFacts]:
        """Each device's health facts; reboot loops count the resets since ``since``
        (the wave's start), for both cohorts alike."""
        presence, telemetry = self.jobs.presence, self.jobs.telemetry
        latest = {d: telemetry.latest[d][1] for d in device_ids if d in telemetry.latest}
        anomalous: set[str] = set()
        for metric in GATE_METRICS:
            values = {d: float(t[metric]) for d, t in latest.items()
                      if isinstance(t.get(metric), (int, float))}
            anomalous.update(a.device_id for a in mad_outliers(values, metric=metric))
        out = {}
        for d in device_ids:
            loop = telemetry.loops.get(d)
            t = latest.get(d, {})
            out[d] = CohortFacts(
                online=bool(presence.online.get(d)),
                reboot_loop=bool(loop is not None and loop.in_loop_since(now, since)),
                anomalous=d in anomalous,
                metrics={m: float(t[m]) for m in GATE_METRICS
                         if isinstance(t.get(m), (int, float))})
        return out

    def tick(self, conn: Any, now: float, result: Any) -> None:
        active = self.registry.rollouts.list_rollouts(active_only=True, limit=1000, conn=conn)
        for rollout in active:
            if rollout.status == RUNNING:
                self._judge(conn, rollout, now)
            elif rollout.status == ROLLING_BACK:
                job_id = f"{rollout.id}-rollback"
                job = self.registry.jobs.get(job_id, conn)
                if job.status == JOB_COMPLETED:
                    counts = self.registry.jobs.counts([job_id], conn)[job_id]
                    self.registry.rollouts.update(
                        conn, rollout.id, status=ROLLED_BACK, updated_at=now,
                        reason=f"rolled back: {counts.get(SUCCEEDED, 0)} devices back on "
                               "their previous version")
                    self.registry.audit.append(conn, "engine", "system",
                                               "rollout.rolled_back", rollout.id,
                                               {"counts": counts}, ts=now)

    def _judge(self, conn: Any, rollout: RolloutRow, now: float) -> None:
        wave = rollout.wave
        if wave is None or wave.status != WAVE_RUNNING:
            return
        gates = Gates.from_dict(rollout.gates)
        counts: dict[str, int] = {}
        if wave.job_id:
            counts = self.registry.jobs.counts([wave.job_id], conn)[wave.job_id]
        updated_ids: list[str] = []
        for w in rollout.waves[:rollout.current_wave + 1]:
            if w.job_id:
                updated_ids += self.registry.jobs.device_ids(conn, w.job_id, [SUCCEEDED])
                updated_ids += [d for d in self.registry.jobs.device_ids(
                    conn, w.job_id, [IN_PROGRESS]) if self._runs(d, rollout.release_version)]
        baseline_ids = [d for w in rollout.waves[rollout.current_wave + 1:]
                        for d in w.device_ids]
        updated_ids = _sample(updated_ids)
        baseline_ids = _sample(baseline_ids)
        facts = self._facts(updated_ids + baseline_ids, now, wave.started_at or 0.0)
        verdict = evaluate_wave(gates, wave.name, counts, [facts[d] for d in updated_ids],
                                [facts[d] for d in baseline_ids])
        if verdict.decision == "continue":
            # The evidence as it accrues, for the console's monitor (written only when it
            # changed: one small row per rollout, not one per tick).
            if verdict.evidence != wave.evidence:
                self.registry.rollouts.update_wave(conn, rollout.id, wave.index,
                                                   evidence=verdict.evidence)
            return
        if verdict.decision == "halt":
            if wave.job_id:
                self.registry.jobs.set_status(conn, wave.job_id, JOB_PAUSED, verdict.reason,
                                              now, only_from=[JOB_IN_PROGRESS])
            self.registry.rollouts.update_wave(conn, rollout.id, wave.index,
                                               status=WAVE_FAILED, evidence=verdict.evidence)
            self.registry.rollouts.update(conn, rollout.id, status=HALTED,
                                          reason=verdict.reason, updated_at=now)
            self.registry.audit.append(conn, "engine", "system", "rollout.halt", rollout.id,
                                       {"gate": verdict.reason, "evidence": verdict.evidence},
                                       ts=now)
            return
        self.registry.rollouts.update_wave(conn, rollout.id, wave.index, status=WAVE_PASSED,
                                           evidence=verdict.evidence, finished_at=now)
        self.registry.audit.append(conn, "engine", "system", "rollout.wave.pass", rollout.id,
                                   {"wave": wave.name, "evidence": verdict.evidence}, ts=now)
        if wave.index + 1 >= len(rollout.waves):
            self.registry.rollouts.update(conn, rollout.id, status=COMPLETED,
                                          reason=verdict.reason, updated_at=now)
            self.registry.audit.append(conn, "engine", "system", "rollout.complete",
                                       rollout.id, {"release": rollout.release_version},
                                       ts=now)
        elif gates.auto_advance and not (gates.two_person
                                         and wave.index + 2 == len(rollout.waves)):
            fresh = self.registry.rollouts.get(rollout.id, conn)
            _start_wave(self.registry, conn, fresh, wave.index + 1, Actor("engine", "system"),
                        now)
        else:
            self.registry.rollouts.update(conn, rollout.id, status=WAITING_APPROVAL,
                                          reason=f"{verdict.reason}; waiting for approval of "
                                                 f"wave {rollout.waves[wave.index + 1].name}",
                                          updated_at=now)

    def _runs(self, thing: str, version: str) -> bool:
        doc = self.jobs.shadows.peek(thing)
        return doc is not None and same_version(doc.reported.get("firmware_version"), version)


def _sample(ids: list[str], limit: int = COHORT_SAMPLE) -> list[str]:
    if len(ids) <= limit:
        return ids
    step = len(ids) / limit
    return [ids[int(i * step)] for i in range(limit)]


def wave_status_counts(registry: Registry, rollout: RolloutRow) -> list[dict[str, Any]]:
    """Per wave: its status and its job's executions by state (for status screens)."""
    job_ids = [w.job_id for w in rollout.waves if w.job_id]
    counts = registry.jobs.counts(job_ids)
    return [{"index": w.index, "name": w.name, "status": w.status,
             "devices": len(w.device_ids), "job": w.job_id,
             "counts": counts.get(w.job_id, {}) if w.job_id else {},
             "approvals": w.approvals, "evidence": w.evidence}
            for w in rollout.waves]


__all__ = [
    "WAVE_CANCELED",
    "JobError",
    "RolloutEngine",
    "RolloutPlan",
    "act",
    "plan_rollout",
    "start_rollout",
    "wave_status_counts",
]
