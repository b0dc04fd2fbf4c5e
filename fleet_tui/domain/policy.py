"""Policies: declarative ``when <condition> then <action>`` rules with a rate limit and a
dry-run mode. Pure logic: parsing and checking a definition, "held for" tracking, the rate
limit. The service (``service/policies.py``) feeds facts in and carries actions out.

A condition is a group query (``domain/query.py``) evaluated against a device (scope
``device``) or a group (scope ``group``), with health facts as extra attributes:

- device: the registry's fields and tags, plus ``unhealthy_for_s``, ``offline_for_s``,
  ``reboot_loop`` (true/false), ``updated_within_s`` (since its latest firmware update
  started; absent when it never had one), ``anomalous`` (true/false), and the latest
  telemetry: ``uptime_s``, ``heap_free``, ``rssi``, ``cpu_pct``, ``temp_c``, ``errors``.
- group: ``total``, ``online``, ``offline``, ``offline_share``, ``unhealthy``,
  ``unhealthy_share``, ``anomalies``, ``active_rollouts`` (rollouts in progress touching the group).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_tui.domain.query import GroupQuery, QuerySyntaxError

SCOPES = ("device", "group")
ACTIONS = ("job", "halt_rollouts", "rollback", "alert")
DEVICE_ACTIONS = ("job", "rollback", "alert")
GROUP_ACTIONS = ("job", "halt_rollouts", "alert")
SEVERITIES = ("info", "warning", "critical")
DEVICE_FACTS = ("unhealthy_for_s", "offline_for_s", "reboot_loop", "updated_within_s",
                "anomalous")
GROUP_FACTS = ("total", "online", "offline", "offline_share", "unhealthy", "unhealthy_share",
               "anomalies", "active_rollouts")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
KEYS = {"name", "scope", "when", "for", "then", "job", "group", "max_per_hour", "dry_run",
        "enabled", "severity", "description", "cooldown"}


class PolicyError(ValueError):
    """A bad policy definition: the message names the policy and the field."""


def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None:
        raise PolicyError(f"{where}: expected seconds or a duration like 10m, 2h")
    return float(m[1]) * _UNIT[m[2]]


@dataclass(frozen=True, slots=True)
class PolicyRule:
    name: str
    scope: str
    when: str
    then: str
    held_s: float = 0.0
    job: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    max_per_hour: int = 10
    cooldown_s: float = 3600.0
    severity: str = "warning"
    description: str = ""

    @property
    def query(self) -> GroupQuery:
        return GroupQuery.parse(self.when)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyRule:
        name = d.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PolicyError(f"policy name {name!r}: 1-64 letters, digits, '_', '-', '.'")
        where = f"policy {name!r}"
        unknown = sorted(set(d) - KEYS)
        if unknown:
            raise PolicyError(f"{where}: unknown field(s) {', '.join(unknown)}")
        scope = d.get("scope", "device")
        if scope not in SCOPES:
            raise PolicyError(f"{where}: scope must be one of {', '.join(SCOPES)}")
        when = d.get("when")
        if not isinstance(when, str) or not when.strip():
            raise PolicyError(f"{where}: 'when' must be a condition, e.g. health = \"unhealthy\"")
        try:
            GroupQuery.parse(when)
        except QuerySyntaxError as err:
            raise PolicyError(f"{where}: when: {err}") from None
        then = d.get("then")
        allowed = DEVICE_ACTIONS if scope == "device" else GROUP_ACTIONS
        if then not in allowed:
            raise PolicyError(f"{where}: then must be one of {', '.join(allowed)} for scope "
                              f"{scope}")
        job = d.get("job", {})
        if then == "job":
            if not isinstance(job, Mapping) or not isinstance(job.get("type"), str):
                raise PolicyError(f"{where}: then = \"job\" needs job = {{ type = \"...\" }}")
            if job["type"] == "firmware_update":
                raise PolicyError(f"{where}: firmware goes out through rollouts, not policies")
        elif job:
            raise PolicyError(f"{where}: 'job' is only for then = \"job\"")
        limit = d.get("max_per_hour", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise PolicyError(f"{where}: max_per_hour must be an integer 1-10000")
        severity = d.get("severity", "warning")
        if severity not in SEVERITIES:
            raise PolicyError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
        group = d.get("group")
        if group is not None and not isinstance(group, str):
            raise PolicyError(f"{where}: group must be a group name")
        return cls(name, scope, when.strip(), then,
                   parse_duration(d.get("for", 0), f"{where}: for"),
                   dict(job) if isinstance(job, Mapping) else {}, group, limit,
                   parse_duration(d.get("cooldown", 3600), f"{where}: cooldown"),
                   severity, str(d.get("description", "")))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "scope": self.scope, "when": self.when,
                             "then": self.then, "for": self.held_s,
                             "max_per_hour": self.max_per_hour, "cooldown": self.cooldown_s,
                             "severity": self.severity}
        if self.job:
            d["job"] = self.job
        if self.group is not None:
            d["group"] = self.group
        if self.description:
            d["description"] = self.description
        return d


def parse_policy_file(data: Mapping[str, Any], source: str = "policies") -> list[
        tuple[PolicyRule, bool, bool]]:
    """``[[policy]]`` tables -> (rule, enabled, dry_run), names unique."""
    items = data.get("policy", [])
    if not isinstance(items, list):
        raise PolicyError(f"{source}: expected [[policy]] tables")
    out, seen = [], set()
    for i, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise PolicyError(f"{source}: policy #{i} is not a table")
        try:
            rule = PolicyRule.from_dict(item)
        except PolicyError as err:
            raise PolicyError(f"{source}: policy #{i}: {err}") from None
        if rule.name in seen:
            raise PolicyError(f"{source}: policy #{i}: duplicate name {rule.name!r}")
        seen.add(rule.name)
        out.append((rule, bool(item.get("enabled", True)), bool(item.get("dry_run", False))))
    return out


def within_rate(fired_at: Iterable[float], limit: int, now: float) -> int:
    """How many more firings the rate limit allows now (a sliding hour)."""
    recent = sum(1 for t in fired_at if now - t < 3600)
    return max(0, limit - recent)


class HeldFor:
    """Since when each subject has met a condition: it fires once held long enough, and
    again only after the cooldown or once the condition cleared and came back."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.fired: dict[str, float] = {}

    def update(self, matching: Iterable[str], now: float, held_s: float, cooldown_s: float
               ) -> list[str]:
        """Subjects due to fire now (not yet rate-limited)."""
        current = set(matching)
        for gone in set(self.since) - current:
            del self.since[gone]
            self.fired.pop(gone, None)
        due = []
        for s in sorted(current):
            start = self.since.setdefault(s, now)
            if now - start < held_s:
                continue
            last = self.fired.get(s)
            if last is None or now - last >= cooldown_s:
                due.append(s)
        return due

    def mark_fired(self, subject: str, now: float) -> None:
        self.fired[subject] = now
