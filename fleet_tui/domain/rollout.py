"""Phased OTA rollouts: the wave plan, the gates and the state machine. Pure logic; the
engine (``service/rollouts.py``) supplies device facts and job counts and persists what
this module decides.

A rollout sends one release to a group in waves (cumulative percentages, default
1 -> 10 -> 50 -> 100, or the values of a tag such as ``deployment_ring``). Waves are chosen
deterministically and stratified across hardware revisions and sites, and the first wave
holds every hardware revision of the target, so that a release that breaks one revision is
caught by the canary. Between waves the rollout waits for an approval unless it advances
by itself; a gate that fails halts it with the evidence.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fleet_tui.domain.health import compare_cohorts
from fleet_tui.domain.jobs import (
    CANCELED,
    FAILED,
    IN_PROGRESS,
    QUEUED,
    REJECTED,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
)

# Rollout states.
RUNNING = "RUNNING"
WAITING_APPROVAL = "WAITING_APPROVAL"
HALTED = "HALTED"
COMPLETED = "COMPLETED"
CANCELLED = "CANCELED"
ROLLING_BACK = "ROLLING_BACK"
ROLLED_BACK = "ROLLED_BACK"
ROLLOUT_STATES = (RUNNING, WAITING_APPROVAL, HALTED, COMPLETED, CANCELLED, ROLLING_BACK,
                  ROLLED_BACK)
ROLLOUT_ACTIVE = frozenset({RUNNING, WAITING_APPROVAL, HALTED, ROLLING_BACK})

# Wave states.
WAVE_PENDING = "PENDING"
WAVE_RUNNING = "RUNNING"
WAVE_PASSED = "PASSED"
WAVE_FAILED = "FAILED"
WAVE_CANCELED = "CANCELED"

DEFAULT_PERCENTAGES = (1.0, 10.0, 50.0, 100.0)
FAILED_STATES = (FAILED, TIMED_OUT, REJECTED)


class RolloutError(ValueError):
    """An action the rollout's state does not allow, or a bad plan; says which and why."""


# ----------------------------------------------------------------------- plan

@dataclass(frozen=True, slots=True)
class PlanDevice:
    id: str
    hardware_rev: str | None
    site: str | None
    ring: str | None = None  # the value of the wave tag, for tag waves
    skip: str | None = None  # capability gating's reason, if any


@dataclass(frozen=True, slots=True)
class WaveSpec:
    """Cumulative percentages (``1, 10, 50, 100``) or the ordered values of ``tag``."""

    percentages: tuple[float, ...] = DEFAULT_PERCENTAGES
    tag: str | None = None
    tag_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tag is not None:
            if not self.tag_values:
                raise RolloutError(f"waves by tag {self.tag!r} need the values in order")
            return
        p = self.percentages
        if not p or any(not 0 < x <= 100 for x in p) or list(p) != sorted(set(p)):
            raise RolloutError("waves: percentages must increase within (0, 100], e.g. "
                               "1,10,50,100")
        if p[-1] != 100:
            raise RolloutError("waves: the last wave must reach 100%")

    @classmethod
    def parse(cls, text: str) -> WaveSpec:
        """``1,10,50,100`` or ``tag:deployment_ring=canary,early,general``."""
        text = text.strip()
        if text.startswith("tag:"):
            key, sep, values = text[4:].partition("=")
            if not sep or not key or not values:
                raise RolloutError(f"waves {text!r}: expected tag:KEY=V1,V2,...")
            return cls(tag=key.strip(), tag_values=tuple(v.strip() for v in values.split(",")))
        try:
            percentages = tuple(float(x.strip().rstrip("%")) for x in text.split(","))
        except ValueError:
            raise RolloutError(f"waves {text!r}: expected percentages like 1,10,50,100") \
                from None
        return cls(percentages=percentages)

    def names(self) -> list[str]:
        if self.tag is not None:
            return list(self.tag_values)
        p = self.percentages
        if len(p) == 1:
            return ["all"]
        middle = [f"wave-{x:g}" for x in p[1:-1]]
        if middle:
            middle[0] = "early"
        return ["canary", *middle, "all"]


@dataclass(frozen=True, slots=True)
class PlannedWave:
    index: int
    name: str
    device_ids: tuple[str, ...]
    by_hardware: dict[str, int]
    by_site: dict[str, int]


@dataclass(frozen=True, slots=True)
class FlightPlan:
    waves: tuple[PlannedWave, ...]
    skipped: tuple[tuple[str, str], ...]  # (device, reason)
    estimated_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "waves": [{"index": w.index, "name": w.name, "devices": len(w.device_ids),
                       "by_hardware": w.by_hardware, "by_site": w.by_site}
                      for w in self.waves],
            "skipped": [{"device_id": d, "reason": r} for d, r in self.skipped],
            "estimated_s": self.estimated_s,
        }


def _rank(seed: str, device_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{device_id}".encode(), digest_size=8).digest()


def _spread(devices: Sequence[PlanDevice], seed: str) -> list[PlanDevice]:
    """Order devices so that every prefix holds each (hardware, site) stratum in proportion:
    each device sorts by its rank within its stratum over the stratum's size."""
    strata: dict[tuple[str, str], list[PlanDevice]] = defaultdict(list)
    for d in devices:
        strata[(d.hardware_rev or "", d.site or "")].append(d)
    keyed: list[tuple[float, bytes, PlanDevice]] = []
    for members in strata.values():
        members.sort(key=lambda d: _rank(seed, d.id))
        n = len(members)
        for i, d in enumerate(members):
            keyed.append(((i + 0.5) / n, _rank(seed, d.id), d))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [d for _, _, d in keyed]


def plan_waves(
    devices: Sequence[PlanDevice], spec: WaveSpec, *, seed: str,
    rate_per_minute: float | None = None, soak_s: float = 0.0,
) -> FlightPlan:
    """The deterministic wave plan for ``devices`` (same input, same plan)."""
    skipped = tuple(sorted((d.id, d.skip) for d in devices if d.skip))
    eligible = [d for d in devices if not d.skip]
    if not eligible:
        raise RolloutError("no device of the target can take this release"
                           + (f" ({len(skipped)} skipped)" if skipped else ""))
    names = spec.names()
    groups: list[list[PlanDevice]]
    if spec.tag is not None:
        index = {v: i for i, v in enumerate(spec.tag_values)}
        groups = [[] for _ in names]
        for d in _spread(eligible, seed):
            # Devices without a known ring value go with the last (broadest) wave.
            groups[index.get(d.ring or "", len(names) - 1)].append(d)
    else:
        order = _spread(eligible, seed)
        n = len(order)
        cuts = [min(n, max(1, math.ceil(n * p / 100))) for p in spec.percentages]
        first = order[:cuts[0]]
        # The canary holds every hardware revision of the target.
        present = {d.hardware_rev for d in first}
        for d in order[cuts[0]:]:
            if d.hardware_rev not in present:
                first.append(d)
                present.add(d.hardware_rev)
        taken = {d.id for d in first}
        groups = [first]
        rest = [d for d in order if d.id not in taken]
        done = len(first)
        for cut in cuts[1:]:
            size = max(0, cut - done)
            groups.append(rest[:size])
            rest = rest[size:]
            done += size
        groups[-1].extend(rest)
    waves: list[PlannedWave] = []
    for name, members in zip(names, groups, strict=True):
        if not members:
            continue
        hw: dict[str, int] = defaultdict(int)
        site: dict[str, int] = defaultdict(int)
        for d in members:
            hw[d.hardware_rev or "?"] += 1
            site[d.site or "?"] += 1
        waves.append(PlannedWave(len(waves), name,
                                 tuple(d.id for d in members), dict(sorted(hw.items())),
                                 dict(sorted(site.items()))))
    estimate = None
    if rate_per_minute:
        estimate = len(eligible) / rate_per_minute * 60 + soak_s * len(waves)
    return FlightPlan(tuple(waves), skipped, estimate)


# ---------------------------------------------------------------------- gates

@dataclass(frozen=True, slots=True)
class MetricGate:
    """A telemetry metric of the updated cohort against the baseline: the ratio of the
    means must stay within [min_ratio, max_ratio]."""

    metric: str
    min_ratio: float | None = None
    max_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class Gates:
    error_threshold: float = 0.10  # failed share of a wave that halts at once
    success_threshold: float = 0.95  # succeeded share that completes a wave
    soak_s: float = 300.0  # online and healthy this long on the new version
    max_offline_delta: float = 0.20  # offline rate, updated minus baseline
    max_reboot_loop_delta: float = 0.10
    max_anomaly_delta: float = 0.20
    min_cohort: int = 3  # health evidence needs at least this many updated devices
    metrics: tuple[MetricGate, ...] = ()
    auto_advance: bool = False
    two_person: bool = False  # the final wave needs approvals from two operators

    def __post_init__(self) -> None:
        for name in ("error_threshold", "success_threshold", "max_offline_delta",
                     "max_reboot_loop_delta", "max_anomaly_delta"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise RolloutError(f"gates.{name}: expected a share in [0, 1], got {value}")
        if self.soak_s < 0:
            raise RolloutError(f"gates.soak_s: expected >= 0, got {self.soak_s}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Gates:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise RolloutError(f"gates: unknown field(s) {', '.join(sorted(unknown))}")
        data = dict(d)
        data["metrics"] = tuple(m if isinstance(m, MetricGate) else MetricGate(**m)
                                for m in data.get("metrics", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class CohortFacts:
    """One device's health facts for the gate's cohort comparison."""

    online: bool
    reboot_loop: bool
    anomalous: bool
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """What the gates say about a wave now, with the figures that made them say it."""

    decision: str  # "continue" | "pass" | "halt"
    reason: str
    evidence: dict[str, Any]


def wave_counts(counts: Mapping[str, int]) -> dict[str, int]:
    targeted = sum(n for s, n in counts.items() if s not in (SKIPPED, CANCELED))
    failed = sum(counts.get(s, 0) for s in FAILED_STATES)
    return {"targeted": targeted, "succeeded": counts.get(SUCCEEDED, 0), "failed": failed,
            "in_flight": counts.get(IN_PROGRESS, 0) + counts.get(QUEUED, 0)}


def _health(gates: Gates, updated: Sequence[CohortFacts], baseline: Sequence[CohortFacts]
            ) -> tuple[str | None, dict[str, Any]]:
    evidence: dict[str, Any] = {"updated_n": len(updated), "baseline_n": len(baseline)}
    if len(updated) < gates.min_cohort or not baseline:
        evidence["note"] = "not enough devices for a cohort comparison yet"
        return None, evidence
    checks = (
        ("offline", [0.0 if f.online else 1.0 for f in updated],
         [0.0 if f.online else 1.0 for f in baseline], gates.max_offline_delta),
        ("reboot_loop", [float(f.reboot_loop) for f in updated],
         [float(f.reboot_loop) for f in baseline], gates.max_reboot_loop_delta),
        ("anomaly", [float(f.anomalous) for f in updated],
         [float(f.anomalous) for f in baseline], gates.max_anomaly_delta),
    )
    failure = None
    for name, u, b, limit in checks:
        c = compare_cohorts(u, b)
        evidence[f"{name}_rate"] = {"updated": round(c.updated_mean, 4),
                                    "baseline": round(c.baseline_mean, 4),
                                    "limit_delta": limit}
        if failure is None and c.difference > limit:
            failure = (f"{name} rate {c.updated_mean:.0%} in the updated cohort against "
                       f"{c.baseline_mean:.0%} in the rest (+{c.difference:.0%} > "
                       f"{limit:.0%})")
    for gate in gates.metrics:
        u = [f.metrics[gate.metric] for f in updated if gate.metric in f.metrics]
        b = [f.metrics[gate.metric] for f in baseline if gate.metric in f.metrics]
        if not u or not b:
            continue
        c = compare_cohorts(u, b)
        evidence[f"metric:{gate.metric}"] = {"updated": round(c.updated_mean, 3),
                                             "baseline": round(c.baseline_mean, 3),
                                             "ratio": round(c.ratio, 3)}
        low = gate.min_ratio is not None and c.ratio < gate.min_ratio
        high = gate.max_ratio is not None and c.ratio > gate.max_ratio
        if failure is None and (low or high):
            bound = gate.min_ratio if low else gate.max_ratio
            failure = (f"{gate.metric}: updated mean {c.updated_mean:.1f} is {c.ratio:.2f}x "
                       f"the rest's {c.baseline_mean:.1f} (limit {bound})")
    return failure, evidence


def evaluate_wave(
    gates: Gates, wave_name: str, counts: Mapping[str, int],
    updated: Sequence[CohortFacts], baseline: Sequence[CohortFacts],
) -> GateVerdict:
    """The gates of a running wave: error threshold first (halts at once), then health
    evidence, then success (the wave passes once every execution finished and enough of
    them succeeded)."""
    c = wave_counts(counts)
    evidence: dict[str, Any] = {"wave": wave_name, **c}
    n = c["targeted"]
    if n == 0:
        return GateVerdict("pass", f"wave {wave_name}: no device to update", evidence)
    failed_share = c["failed"] / n
    evidence["failed_share"] = round(failed_share, 4)
    evidence["error_threshold"] = gates.error_threshold
    # The health comparison goes into the evidence even when the error gate decides, so
    # the operator sees the whole picture of a halted wave.
    failure, health = _health(gates, updated, baseline)
    evidence["health"] = health
    if c["failed"] and failed_share >= gates.error_threshold:
        return GateVerdict("halt", (
            f"error gate: {c['failed']} of {n} devices in wave {wave_name} failed "
            f"({failed_share:.0%} >= {gates.error_threshold:.0%})"), evidence)
    if failure is not None:
        return GateVerdict("halt", f"health gate, wave {wave_name}: {failure}", evidence)
    if c["in_flight"]:
        return GateVerdict("continue", f"wave {wave_name}: {c['in_flight']} in flight",
                           evidence)
    success = c["succeeded"] / n
    evidence["success_share"] = round(success, 4)
    if success >= gates.success_threshold:
        return GateVerdict("pass", (
            f"wave {wave_name} passed: {c['succeeded']} of {n} confirmed "
            f"({success:.0%} >= {gates.success_threshold:.0%})"), evidence)
    return GateVerdict("halt", (
        f"success gate: wave {wave_name} finished with {c['succeeded']} of {n} confirmed "
        f"({success:.0%} < {gates.success_threshold:.0%})"), evidence)


# --------------------------------------------------------------- state machine

ACTIONS = ("approve", "halt", "resume", "cancel", "rollback")


def check_action(action: str, status: str, *, approvals: Sequence[str] = (),
                 actor: str = "", final_wave_next: bool = False, two_person: bool = False
                 ) -> str:
    """Validate an operator action; returns what it does: ``start-next`` or ``approval``
    (approve), ``halt``, ``resume``, ``cancel``, ``rollback``. Raises RolloutError."""
    if action not in ACTIONS:
        raise RolloutError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if action == "approve":
        if status != WAITING_APPROVAL:
            raise RolloutError(f"cannot approve: the rollout is {status}, not waiting for "
                               "an approval")
        if two_person and final_wave_next:
            if actor in approvals:
                raise RolloutError(f"two-person rule: {actor} already approved the final "
                                   "wave; a second operator must approve")
            return "start-next" if approvals else "approval"
        return "start-next"
    if action == "halt":
        if status not in (RUNNING, WAITING_APPROVAL):
            raise RolloutError(f"cannot halt: the rollout is {status}")
        return "halt"
    if action == "resume":
        if status != HALTED:
            raise RolloutError(f"cannot resume: the rollout is {status}, not halted")
        return "resume"
    if action == "cancel":
        if status not in (RUNNING, WAITING_APPROVAL, HALTED):
            raise RolloutError(f"cannot cancel: the rollout is {status}")
        return "cancel"
    if status not in (RUNNING, WAITING_APPROVAL, HALTED, COMPLETED):
        raise RolloutError(f"cannot roll back: the rollout is {status}")
    return "rollback"
