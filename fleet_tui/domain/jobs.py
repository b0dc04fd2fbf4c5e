"""Bulk jobs: execution states, job settings, the release (rate) policy, abort criteria,
retries and capability gating. Pure logic: the engine (``service/jobs.py``) feeds it counts
and clocks and carries out what it decides.

Execution states are AWS IoT Jobs' (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT,
REJECTED, REMOVED, CANCELED) plus SKIPPED: a target that capability gating kept out of the
job, recorded with its reason and never sent anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fleet_tui.domain.version import VersionError, parse_version

QUEUED = "QUEUED"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
REJECTED = "REJECTED"
REMOVED = "REMOVED"
CANCELED = "CANCELED"
SKIPPED = "SKIPPED"

EXECUTION_STATES = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED,
                    CANCELED, SKIPPED)
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED, SKIPPED})
ACTIVE_STATES = frozenset({QUEUED, IN_PROGRESS})
# What a device may set through jobs/{id}/update (AWS: UpdateJobExecution).
DEVICE_SETTABLE = frozenset({IN_PROGRESS, SUCCEEDED, FAILED, REJECTED})

# Job status.
JOB_IN_PROGRESS = "IN_PROGRESS"
JOB_PAUSED = "PAUSED"  # a halted rollout's wave: nothing new is started
JOB_COMPLETED = "COMPLETED"
JOB_CANCELED = "CANCELED"
JOB_ABORTED = "ABORTED"
JOB_ACTIVE = frozenset({JOB_IN_PROGRESS, JOB_PAUSED})

JOB_TYPES = ("config_update", "firmware_update", "command", "reboot", "diagnostic")
# firmware_update is carried by the shadow's desired OTA keys (the device's OTA path);
# everything else by the AWS IoT Jobs MQTT API.
SHADOW_CARRIED = frozenset({"firmware_update"})
COMMANDS = ("led_on", "led_off", "fail")
RETRYABLE = (FAILED, TIMED_OUT)
ABORT_TYPES = (FAILED, TIMED_OUT, REJECTED, "ALL")


class JobError(ValueError):
    """A job definition or a state change that cannot be: the message says which field."""


@dataclass(frozen=True, slots=True)
class RampUp:
    """AWS IoT Jobs' exponential rollout rate: start at ``base_per_minute`` and multiply by
    ``factor`` each time another ``every`` devices were notified (or succeeded)."""

    base_per_minute: int
    factor: float
    every: int
    on: str = "notified"  # notified | succeeded

    def rate(self, notified: int, succeeded: int, maximum: int | None) -> float:
        steps = (notified if self.on == "notified" else succeeded) // self.every
        rate = self.base_per_minute * self.factor ** min(steps, 64)
        return min(rate, maximum) if maximum is not None else rate


@dataclass(frozen=True, slots=True)
class AbortCriterion:
    """Abort the job when more than ``threshold_pct`` % of the finished executions ended in
    ``failure_type`` (ALL: any failure), once at least ``min_executions`` have finished."""

    failure_type: str
    threshold_pct: float
    min_executions: int

    def tripped(self, counts: Mapping[str, int]) -> str | None:
        finished = sum(counts.get(s, 0) for s in (SUCCEEDED, FAILED, TIMED_OUT, REJECTED))
        if finished < self.min_executions or finished == 0:
            return None
        kinds = (FAILED, TIMED_OUT, REJECTED) if self.failure_type == "ALL" else (
            self.failure_type,)
        bad = sum(counts.get(s, 0) for s in kinds)
        share = 100.0 * bad / finished
        if share > self.threshold_pct:
            return (f"{self.failure_type} {bad} of {finished} finished ({share:.1f}%) > "
                    f"{self.threshold_pct:g}% (after at least {self.min_executions})")
        return None


@dataclass(frozen=True, slots=True)
class JobSettings:
    concurrency: int = 100  # executions in flight at once
    rate_per_minute: int | None = None  # None: no rate limit
    ramp_up: RampUp | None = None
    timeout_s: float | None = 600.0  # IN_PROGRESS longer than this -> TIMED_OUT
    retries: int = 0  # extra attempts per device, 0-10
    retry_on: tuple[str, ...] = RETRYABLE
    abort: tuple[AbortCriterion, ...] = ()
    soak_s: float = 0.0  # firmware: online and healthy this long on the new version

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 1_000_000:
            raise JobError(f"concurrency: expected 1..1000000, got {self.concurrency}")
        if self.rate_per_minute is not None and self.rate_per_minute < 1:
            raise JobError(f"rate_per_minute: expected >= 1, got {self.rate_per_minute}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise JobError(f"timeout_s: expected > 0, got {self.timeout_s}")
        if not 0 <= self.retries <= 10:
            raise JobError(f"retries: expected 0..10, got {self.retries}")
        for state in self.retry_on:
            if state not in RETRYABLE:
                raise JobError(f"retry_on: {state!r} is not one of {', '.join(RETRYABLE)}")
        for c in self.abort:
            if c.failure_type not in ABORT_TYPES:
                raise JobError(f"abort: failure type {c.failure_type!r} is not one of "
                               f"{', '.join(ABORT_TYPES)}")
            if not 0 <= c.threshold_pct <= 100:
                raise JobError(f"abort: threshold {c.threshold_pct} is not a percentage")
            if c.min_executions < 1:
                raise JobError(f"abort: min_executions must be >= 1, got {c.min_executions}")
        if self.ramp_up is not None:
            r = self.ramp_up
            if r.base_per_minute < 1 or r.factor < 1 or r.every < 1 or r.on not in (
                    "notified", "succeeded"):
                raise JobError("ramp_up: base >= 1, factor >= 1, every >= 1, "
                               "on notified|succeeded")
        if self.soak_s < 0:
            raise JobError(f"soak_s: expected >= 0, got {self.soak_s}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise JobError(f"settings: unknown field(s) {', '.join(sorted(unknown))}")
        data = dict(d)
        try:
            ramp = data.get("ramp_up")
            if isinstance(ramp, Mapping):
                data["ramp_up"] = RampUp(**ramp)
            data["abort"] = tuple(
                c if isinstance(c, AbortCriterion) else AbortCriterion(**c)
                for c in data.get("abort", ()))
            data["retry_on"] = tuple(data.get("retry_on", RETRYABLE))
            return cls(**data)
        except JobError:
            raise
        except (TypeError, AttributeError, ValueError) as err:
            # Stored or sent settings of the wrong shape (a number where a list belongs).
            raise JobError(f"settings: {err}") from None

    def current_rate(self, notified: int, succeeded: int) -> float | None:
        """Executions per minute allowed now (None: unlimited)."""
        if self.ramp_up is not None:
            return self.ramp_up.rate(notified, succeeded, self.rate_per_minute)
        return float(self.rate_per_minute) if self.rate_per_minute is not None else None

    def release_budget(self, in_flight: int, started_last_minute: int, notified: int,
                       succeeded: int) -> int:
        """How many more executions may start now: the concurrency slots left, capped by the
        per-minute rate over a sliding minute (counted from durable start times, so a
        restarted engine keeps to it)."""
        slots = max(0, self.concurrency - in_flight)
        rate = self.current_rate(notified, succeeded)
        if rate is None:
            return slots
        return max(0, min(slots, math.floor(rate) - started_last_minute))

    def should_retry(self, status: str, attempt: int) -> bool:
        return status in self.retry_on and attempt < self.retries


def abort_reason(settings: JobSettings, counts: Mapping[str, int]) -> str | None:
    for criterion in settings.abort:
        reason = criterion.tripped(counts)
        if reason is not None:
            return reason
    return None


def device_transition(current: str, new: str) -> str | None:
    """Why a device may not move its execution from ``current`` to ``new`` (None: it may)."""
    if new not in DEVICE_SETTABLE:
        return f"status {new!r} cannot be set by a device"
    if current in TERMINAL_STATES:
        return f"execution is already {current}"
    if current == IN_PROGRESS or new in (IN_PROGRESS, REJECTED, FAILED):
        return None
    # QUEUED -> SUCCEEDED without IN_PROGRESS: AWS allows it (a quick job).
    return None


# ------------------------------------------------------------------ documents

def job_document(job_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``jobDocument`` a device receives, validated. Raises JobError."""
    if job_type not in JOB_TYPES:
        raise JobError(f"type: expected one of {', '.join(JOB_TYPES)}, got {job_type!r}")
    doc: dict[str, Any] = {"operation": job_type}
    if job_type == "command":
        command = params.get("command")
        if command not in COMMANDS:
            raise JobError(f"command: expected one of {', '.join(COMMANDS)}, got {command!r}")
        doc["command"] = command
    elif job_type == "config_update":
        config = params.get("config")
        if not isinstance(config, Mapping) or not config:
            raise JobError("config: a config_update needs a non-empty config object")
        doc["config"] = dict(config)
    elif job_type == "firmware_update":
        release = params.get("release")
        if not isinstance(release, str) or not release:
            raise JobError("release: a firmware_update needs a release version")
        doc["release"] = release
    return doc


# ------------------------------------------------------------- capability gating

@dataclass(frozen=True, slots=True)
class ReleaseFacts:
    """What gating needs of a manifest entry."""

    version: str
    hardware_revs: tuple[str, ...]
    desired_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TargetFacts:
    id: str
    firmware_version: str | None
    hardware_rev: str | None


def skip_reason(
    job_type: str, document: Mapping[str, Any], device: TargetFacts,
    releases: Mapping[str, ReleaseFacts],
) -> str | None:
    """Why this device must not get this job (None: it may). Decided before anything is
    sent: a config push to a firmware that does not understand the keys would never
    converge, and an image for another hardware revision would not boot."""
    if job_type == "firmware_update":
        target = releases.get(document["release"])
        if target is None:
            return f"release {document['release']} is not in the manifest"
        if device.hardware_rev not in target.hardware_revs:
            return (f"release {target.version} does not support hardware "
                    f"{device.hardware_rev or '(unknown)'}")
        if device.firmware_version is not None:
            try:
                if parse_version(device.firmware_version) == parse_version(target.version):
                    return f"already runs {target.version}"
            except VersionError:
                pass
        return None
    if job_type == "config_update":
        current = releases.get(device.firmware_version or "")
        if current is None:
            return (f"firmware {device.firmware_version or '(unknown)'} is not in the "
                    "manifest: cannot tell which keys it understands")
        unknown = sorted(set(document["config"]) - set(current.desired_keys))
        if unknown:
            return f"firmware {current.version} does not understand {', '.join(unknown)}"
    return None


def unknown_desired_keys(keys: Iterable[str], firmware_version: str | None,
                         releases: Mapping[str, ReleaseFacts]) -> list[str] | None:
    """The desired keys a device's firmware does not understand (None: version unknown)."""
    current = releases.get(firmware_version or "")
    if current is None:
        return None
    return sorted(set(keys) - set(current.desired_keys))


@dataclass(slots=True)
class Progress:
    """Counts of a job's executions by state."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.counts.items() if s in TERMINAL_STATES)

    @property
    def active(self) -> int:
        return sum(self.counts.get(s, 0) for s in ACTIVE_STATES)

    def line(self) -> str:
        return "  ".join(f"{s.lower()} {self.counts[s]}" for s in EXECUTION_STATES
                         if self.counts.get(s))


def ordered_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {s: counts.get(s, 0) for s in EXECUTION_STATES}


def validate_targets(device_ids: Sequence[str]) -> None:
    if not device_ids:
        raise JobError("targets: the job has no devices")
