"""The policy engine: ``when <condition> then <action>`` rules from a TOML file or created
in the console, evaluated on the engine's tick against the live fleet (the group query
language plus health facts, see ``domain/policy.py``). Actions go through the same API as
an operator's (``job_control``, ``rollouts.act``); every firing -- and every would-be
firing of a dry-run policy -- is audited with its evidence, within the policy's rate
limit (a sliding hour, kept in the registry so it holds across a restart).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_tui.domain import roles
from fleet_tui.domain.alerts import AlertSignal
from fleet_tui.domain.health import mad_outliers
from fleet_tui.domain.jobs import FAILED, IN_PROGRESS, JobError, JobSettings
from fleet_tui.domain.policy import HeldFor, PolicyError, PolicyRule, parse_policy_file, within_rate
from fleet_tui.domain.query import DeviceRecord
from fleet_tui.domain.rollout import HALTED, ROLLOUT_ACTIVE, RolloutError
from fleet_tui.registry.automation_store import PolicyRow
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry
from fleet_tui.service.alerts import all_groups, apply_signals, group_members
from fleet_tui.service.evaluation import PreparedStep
from fleet_tui.service.job_control import Actor, Target, create_job, plan_job

log = logging.getLogger(__name__)
ANOMALY_METRICS = ("heap_free", "cpu_pct", "temp_c")
TELEMETRY_FACTS = ("uptime_s", "heap_free", "rssi", "cpu_pct", "temp_c", "errors")


# ------------------------------------------------------------ service-layer functions

# What a policy may do, its author must be allowed to do (roles.py has no policy
# permission of its own yet): it then acts as role "system".
ACTION_PERMISSIONS = {"job": (roles.CREATE_JOB,), "halt_rollouts": (roles.HALT_ROLLOUT,),
                      "rollback": (roles.ROLLBACK_ROLLOUT,), "alert": (roles.CREATE_JOB,)}


def _require_for(actor: Actor, rules: list[PolicyRule]) -> None:
    actor.require(roles.CREATE_JOB)
    for rule in rules:
        for permission in ACTION_PERMISSIONS[rule.then]:
            actor.require(permission)


def load_policy_file(registry: Registry, path: str | Path, actor: Actor) -> list[str]:
    """Load (or reload) the policies of a TOML file. A bad file changes nothing and says
    where it is wrong; an operator's enable/dry-run toggles survive a reload."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"{path}: {err}") from None
    except OSError as err:
        raise PolicyError(f"{path}: {err.strerror}") from None
    rules = parse_policy_file(data, str(path))
    _require_for(actor, [r for r, _, _ in rules])
    now = time.time()
    with registry.locked() as conn:
        for rule, enabled, dry_run in rules:
            registry.automation.upsert_policy(conn, rule.name, rule.to_dict(), source="file",
                                              enabled=enabled, dry_run=dry_run,
                                              actor=actor.name, now=now)
        registry.audit.append(conn, actor.name, actor.role, "policy.load", str(path),
                              {"policies": [r.name for r, _, _ in rules]}, ts=now)
    return [r.name for r, _, _ in rules]


def create_policy(registry: Registry, definition: Mapping[str, Any], actor: Actor, *,
                  enabled: bool = True, dry_run: bool = False) -> PolicyRow:
    """A policy made in the console or through the API (replaces one of the same name)."""
    rule = PolicyRule.from_dict({k: v for k, v in definition.items()
                                 if k not in ("enabled", "dry_run")})
    _require_for(actor, [rule])
    now = time.time()
    with registry.locked() as conn:
        registry.automation.upsert_policy(conn, rule.name, rule.to_dict(), source="console",
                                          enabled=enabled, dry_run=dry_run, actor=actor.name,
                                          now=now, keep_state=False)
        registry.audit.append(conn, actor.name, actor.role, "policy.create", rule.name,
                              {**rule.to_dict(), "enabled": enabled, "dry_run": dry_run},
                              ts=now)
    return registry.automation.get_policy(rule.name)


def list_policies(registry: Registry) -> list[PolicyRow]:
    return registry.automation.list_policies()


def set_policy(registry: Registry, name: str, actor: Actor, *, enabled: bool | None = None,
               dry_run: bool | None = None) -> PolicyRow:
    """Toggle a policy on or off, or in and out of dry-run."""
    _require_for(actor, [PolicyRule.from_dict(registry.automation.get_policy(name).definition)])
    values: dict[str, Any] = {}
    if enabled is not None:
        values["enabled"] = enabled
    if dry_run is not None:
        values["dry_run"] = dry_run
    now = time.time()
    with registry.locked() as conn:
        before = registry.automation.get_policy(name, conn)
        registry.automation.update_policy(conn, name, updated_by=actor.name, updated_at=now,
                                          **values)
        registry.audit.append(conn, actor.name, actor.role, "policy.update", name,
                              {"from": {"enabled": before.enabled, "dry_run": before.dry_run},
                               **values}, ts=now)
    return registry.automation.get_policy(name)


def toggle_policy(registry: Registry, name: str, actor: Actor) -> PolicyRow:
    return set_policy(registry, name, actor,
                      enabled=not registry.automation.get_policy(name).enabled)


def delete_policy(registry: Registry, name: str, actor: Actor) -> None:
    actor.require(roles.CREATE_JOB)
    with registry.locked() as conn:
        registry.automation.delete_policy(conn, name)
        registry.audit.append(conn, actor.name, actor.role, "policy.delete", name)


# ------------------------------------------------------------------ the engine step

@dataclass(slots=True)
class Decision:
    """One policy's judgement of one evaluation, applied later inside the engine's tick."""

    name: str
    rule: PolicyRule
    due: list[str] = field(default_factory=list)  # subjects to act on (before the limit)
    ripe: list[str] = field(default_factory=list)  # alert policies: subjects held long enough
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    firmware: dict[str, Any] = field(default_factory=dict)


class PolicyEngine(PreparedStep):
    """Tick participant: judges the enabled policies every ``evaluate_s`` outside the lock
    (see ``evaluation.py``) and carries out what is due inside the engine's transaction."""

    def __init__(self, registry: Registry, engine: Any, *, evaluate_s: float = 10.0,
                 policies_file: str = "") -> None:
        super().__init__(evaluate_s)
        self.registry = registry
        self.engine = engine  # the JobsEngine: presence, telemetry
        self.policies_file = policies_file
        self._file_mtime: float | None = None
        self.held: dict[str, HeldFor] = {}
        self._held_lock = threading.Lock()
        self.unhealthy_since: dict[str, float] = {}
        self.firings = 0

    def after_tick(self, now: float) -> None:
        # The file is loaded outside the tick: loading takes the registry's lock itself.
        self._reload()

    def _reload(self) -> None:
        if not self.policies_file:
            return
        try:
            mtime = os.stat(self.policies_file).st_mtime
        except OSError:
            return
        if mtime == self._file_mtime:
            return
        self._file_mtime = mtime
        try:
            load_policy_file(self.registry, self.policies_file, Actor("policy-file", "system"))
        except PolicyError as err:
            log.error("policies not reloaded: %s", err)

    # ------------------------------------------------------- judge (no lock held)

    def evaluate(self, now: float) -> list[Decision]:
        decisions: list[Decision] = []
        with self.registry.engine.connect() as conn:
            policies = [p for p in self.registry.automation.list_policies(conn) if p.enabled]
            if not policies:
                return decisions
            facts = _FactCache(self, conn, now)
            for row in policies:
                try:
                    rule = PolicyRule.from_dict(row.definition)
                    decision = self._judge(row, rule, facts, now)
                except Exception as err:
                    log.error("policy %s not evaluated: %s", row.name, err)
                    continue
                if decision is not None:
                    decisions.append(decision)
        return decisions

    def _judge(self, row: PolicyRow, rule: PolicyRule, facts: _FactCache, now: float
               ) -> Decision | None:
        subjects = facts.devices(rule.group) if rule.scope == "device" else \
            facts.groups(rule.group)
        query = rule.query
        matching = {sid: rec for sid, rec in subjects.items() if query.matches(rec)}
        with self._held_lock:
            held = self.held.setdefault(row.name, HeldFor())
            if rule.then == "alert":
                held.update(matching, now, rule.held_s, 0.0)
                ripe = sorted(s for s, t in held.since.items() if now - t >= rule.held_s)
                return Decision(row.name, rule, ripe=ripe,
                                evidence={s: _evidence(matching[s]) for s in ripe})
            due = held.update(matching, now, rule.held_s, rule.cooldown_s)
        if not due:
            return None
        firmware = {d: facts.firmware[d] for d in due if d in facts.firmware} \
            if rule.then == "rollback" else {}
        return Decision(row.name, rule, due=due,
                        evidence={s: _evidence(matching[s]) for s in due}, firmware=firmware)

    # ------------------------------------------------------- act (inside the tick)

    def tick(self, conn: Any, now: float, result: Any) -> None:
        for _, decisions in self.take():
            for d in decisions:
                try:
                    with conn.begin_nested():
                        self._apply(conn, d, now)
                except Exception as err:  # a failing policy never stops the engine's tick
                    if not isinstance(err, (JobError, RolloutError, RegistryError,
                                            ValueError)):
                        log.exception("policy %s failed", d.name)
                    log.warning("policy %s: %s", d.name, err)
                    self.registry.audit.append(conn, f"policy:{d.name}", "system",
                                               "policy.error", d.name, {"error": str(err)},
                                               ts=now)

    def _apply(self, conn: Any, d: Decision, now: float) -> None:
        row = self.registry.automation.get_policy(d.name, conn)  # now: enabled, limit state
        if not row.enabled:
            return
        rule = d.rule
        if rule.then == "alert":
            self._alerts(conn, row, d, now)
            return
        allowed = within_rate(row.fired_at, rule.max_per_hour, now)
        fire, limited = d.due[:allowed], d.due[allowed:]
        actor = Actor(f"policy:{row.name}", "system")
        if limited:
            self.registry.audit.append(conn, actor.name, actor.role, "policy.rate_limited",
                                       row.name, {"held_back": limited[:50],
                                                  "max_per_hour": rule.max_per_hour}, ts=now)
        if not fire:
            return
        if row.dry_run:
            outcome: dict[str, Any] = {"dry_run": True, "would": rule.then}
        else:
            outcome = self._act(conn, rule, fire, d, actor, now)
        with self._held_lock:
            held = self.held.setdefault(row.name, HeldFor())
            for s in fire:
                held.mark_fired(s, now)
        recent = [t for t in row.fired_at if now - t < 3600] + [now] * len(fire)
        self.registry.automation.update_policy(conn, row.name, fired_at=recent)
        self.firings += len(fire)
        self.registry.audit.append(
            conn, actor.name, actor.role, "policy.dry_run" if row.dry_run else "policy.fire",
            row.name, {"when": rule.when, "then": rule.then, "subjects": fire,
                       "evidence": {s: d.evidence[s] for s in fire}, **outcome}, ts=now)

    def _alerts(self, conn: Any, row: PolicyRow, d: Decision, now: float) -> None:
        rule = d.rule
        prefix = f"policy:{rule.group or ''}:{rule.name}/"
        open_keys = set(self.registry.automation.open_alerts(conn, ["policy"], prefix))
        new = [s for s in d.ripe if prefix + s not in open_keys]
        allowed = within_rate(row.fired_at, rule.max_per_hour, now)
        if row.dry_run:
            with self._held_lock:
                held = self.held.setdefault(row.name, HeldFor())
                would = [s for s in new if not held.fired.get(s)][:allowed]
                for s in would:
                    held.mark_fired(s, now)
            if would:
                self.registry.audit.append(
                    conn, f"policy:{row.name}", "system", "policy.dry_run", row.name,
                    {"when": rule.when, "then": "alert", "subjects": would,
                     "evidence": {s: d.evidence[s] for s in would}}, ts=now)
            return
        keep = set(d.ripe) - set(new[allowed:])
        signals = [AlertSignal("policy", f"{rule.name}/{s}", rule.severity,
                               f"policy {rule.name}: {s} matches {rule.when}", rule.group,
                               d.evidence[s]) for s in sorted(keep)]
        raised, _ = apply_signals(self.registry, conn, signals, now, kinds=["policy"],
                                  key_prefix=prefix,
                                  may_resolve=lambda key: key.startswith(prefix))
        if raised:
            recent = [t for t in row.fired_at if now - t < 3600] + [now] * raised
            self.registry.automation.update_policy(conn, row.name, fired_at=recent)
            self.firings += raised

    def _act(self, conn: Any, rule: PolicyRule, subjects: list[str], d: Decision,
             actor: Actor, now: float) -> dict[str, Any]:
        if rule.then == "job":
            settings = JobSettings.from_dict(rule.job.get("settings") or {})
            targets = [Target(device_ids=tuple(subjects))] if rule.scope == "device" else \
                [Target(group=g) for g in subjects]
            jobs = []
            for t in targets:
                plan = plan_job(self.registry, rule.job["type"], rule.job.get("params") or {},
                                t, settings, conn=conn)
                create_job(self.registry, plan, actor, conn=conn)
                jobs.append({"job": plan.job_id, "queued": len(plan.queued),
                             "skipped": len(plan.skipped)})
            return {"jobs": jobs}
        if rule.then == "halt_rollouts":
            from fleet_tui.service.rollouts import act

            halted = []
            for group in subjects:
                members = set(group_members(self.registry, conn, group))
                for r in self.registry.rollouts.list_rollouts(active_only=True, limit=1000,
                                                              conn=conn):
                    if r.status == HALTED or r.status not in ROLLOUT_ACTIVE:
                        continue
                    touches = r.group_name == group or any(
                        members.intersection(w.device_ids) for w in r.waves)
                    if touches:
                        act(self.registry, r.id, "halt", actor, conn=conn,
                            reason=f"policy {rule.name}: group {group} matches {rule.when}")
                        halted.append(r.id)
            return {"halted": halted}
        if rule.then == "rollback":
            return self._rollback(conn, subjects, d.firmware, actor, now)
        raise PolicyError(f"policy {rule.name}: unknown action {rule.then!r}")

    def _rollback(self, conn: Any, devices: list[str], firmware: dict[str, Any],
                  actor: Actor, now: float) -> dict[str, Any]:
        """The previous firmware on each device: its running update (if any) is judged
        failed, then a firmware job sets its ``from`` version as desired."""
        per_device: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for d in devices:
            start = firmware.get(d)
            previous = (start.params or {}).get("from") if start else None
            if start is None or not previous:
                skipped[d] = "no earlier version known"
                continue
            if start.status == IN_PROGRESS:
                self.registry.jobs.transition(conn, start.job_id, [d], [IN_PROGRESS], FAILED,
                                              now, details={"reason": f"{actor.name}: "
                                                            "reboot loop after the update"})
            per_device[d] = {"release": previous}
        if not per_device:
            return {"rolled_back": [], "skipped": skipped}
        first = next(iter(per_device.values()))["release"]
        plan = plan_job(self.registry, "firmware_update", {"release": first},
                        Target(device_ids=tuple(per_device)), JobSettings(soak_s=0.0),
                        per_device=per_device, conn=conn)
        skipped.update(dict(plan.skipped))
        if plan.queued:
            create_job(self.registry, plan, actor, conn=conn)
        return {"rolled_back": plan.queued, "job": plan.job_id if plan.queued else None,
                "skipped": skipped}


class _FactCache:
    """Facts for one evaluation, computed once and shared by every policy."""

    def __init__(self, engine: PolicyEngine, conn: Any, now: float) -> None:
        self.owner = engine
        self.registry = engine.registry
        self.conn = conn
        self.now = now
        self._devices: dict[str, DeviceRecord] | None = None
        self._firmware: Any = None
        self._members: dict[str, list[str]] = {}

    @property
    def firmware(self) -> dict[str, Any]:
        if self._firmware is None:
            self._firmware = self.registry.automation.latest_firmware_starts(self.conn)
        return self._firmware

    def members(self, group: str) -> list[str]:
        if group not in self._members:
            self._members[group] = group_members(self.registry, self.conn, group)
        return self._members[group]

    def all_devices(self) -> dict[str, DeviceRecord]:
        if self._devices is None:
            presence = self.owner.engine.presence
            telemetry = self.owner.engine.telemetry
            records = {r.id: r for r in self.registry.device_records()}
            # Copies: the service's loop keeps updating these while we read.
            latest = {d: t for d, t in telemetry.latest.copy().items() if d in records}
            anomalous: set[str] = set()
            for metric in ANOMALY_METRICS:
                values = {d: float(t[1][metric]) for d, t in latest.items()
                          if isinstance(t[1].get(metric), (int, float))}
                anomalous.update(a.device_id for a in mad_outliers(values, metric=metric))
            since = self.owner.unhealthy_since
            for d, rec in records.items():
                if d in presence.online:
                    rec.online = bool(presence.online[d])
                if d in latest:
                    rec.health = latest[d][0]
                if rec.online and rec.health == "unhealthy":
                    since.setdefault(d, self.now)
                else:
                    since.pop(d, None)
                loop = telemetry.loops.get(d)
                facts: dict[str, Any] = {
                    "unhealthy_for_s": round(self.now - since[d], 1) if d in since else 0,
                    "offline_for_s": 0 if rec.online else round(
                        self.now - presence.last_seen.get(d, self.now), 1),
                    "reboot_loop": bool(loop is not None and loop.in_loop(self.now)),
                    "anomalous": d in anomalous,
                }
                start = self.firmware.get(d)
                if start is not None:
                    facts["updated_within_s"] = round(self.now - start.started_at, 1)
                if d in latest:  # the latest telemetry (heap_free, temp_c, ...)
                    facts.update({m: v for m, v in latest[d][1].items()
                                  if m in TELEMETRY_FACTS and isinstance(v, (int, float))})
                rec.reported = {**rec.reported, **facts}
            self._devices = records
        return self._devices

    def devices(self, group: str | None) -> dict[str, DeviceRecord]:
        records = self.all_devices()
        if group is None:
            return records
        return {d: records[d] for d in self.members(group) if d in records}

    def groups(self, group: str | None) -> dict[str, DeviceRecord]:
        records = self.all_devices()
        names = [group] if group is not None else [g.name for g in all_groups(self.registry)]
        active = [(r.group_name, {d for w in r.waves for d in w.device_ids})
                  for r in self.registry.rollouts.list_rollouts(active_only=True, limit=1000,
                                                                conn=self.conn)]
        out = {}
        for name in names:
            ids = [d for d in self.members(name) if d in records]
            touching = sum(1 for group, devices in active
                           if group == name or not devices.isdisjoint(ids))
            total = len(ids)
            online = sum(1 for d in ids if records[d].online)
            unhealthy = sum(1 for d in ids if records[d].online
                            and records[d].health == "unhealthy")
            anomalies = sum(1 for d in ids if records[d].reported.get("anomalous"))
            facts = {"total": total, "online": online, "offline": total - online,
                     "offline_share": round((total - online) / total, 4) if total else 0.0,
                     "unhealthy": unhealthy,
                     "unhealthy_share": round(unhealthy / total, 4) if total else 0.0,
                     "anomalies": anomalies,
                     "active_rollouts": touching}
            out[name] = DeviceRecord(name, reported=facts)
        return out


def _evidence(record: DeviceRecord) -> dict[str, Any]:
    d: dict[str, Any] = dict(record.reported)
    if record.firmware_version is not None or record.health is not None:
        d.update(online=record.online, health=record.health,
                 firmware_version=record.firmware_version)
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
