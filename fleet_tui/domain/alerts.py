"""Alerts: what raises them, their severity, and deduplication. The health rules and the
policies produce *signals* every evaluation; an alert is open while its signal keeps
coming and resolves when it stops. One open alert per key (kind + subject), however often
its signal repeats: it counts the repeats instead.

Kinds: ``offline_spike`` (a group's offline share jumped), ``anomaly`` (a device is an
outlier against its group), ``gone_dark`` (a device went silent), ``rollout_halted``,
``gate_failed`` (a rollout wave's gate), ``policy`` (raised by a policy's ``alert``
action).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("offline_spike", "anomaly", "gone_dark", "rollout_halted", "gate_failed", "policy")
SEVERITIES = ("info", "warning", "critical")
OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertSignal:
    kind: str
    subject: str
    severity: str
    message: str
    group: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.group or ''}:{self.subject}"


@dataclass(frozen=True, slots=True)
class AlertPlan:
    raise_new: list[AlertSignal]
    refresh: list[AlertSignal]
    resolve: list[str]  # keys


def reconcile(open_keys: Iterable[str], signals: Iterable[AlertSignal],
              evaluated_kinds: Iterable[str]) -> AlertPlan:
    """Compare what is open with this evaluation's signals. Only kinds this evaluation
    looked at may resolve (a policy alert is not resolved by the health sweep)."""
    by_key: dict[str, AlertSignal] = {}
    for s in signals:
        by_key.setdefault(s.key, s)
    current = set(open_keys)
    kinds = set(evaluated_kinds)
    return AlertPlan(
        raise_new=[s for k, s in by_key.items() if k not in current],
        refresh=[s for k, s in by_key.items() if k in current],
        resolve=sorted(k for k in current if k not in by_key and k.split(":", 1)[0] in kinds))


def offline_spike(share: float, total: int, *, threshold: float, min_devices: int = 5
                  ) -> bool:
    """A group's offline share above the threshold (groups too small to judge excepted)."""
    return total >= min_devices and share > threshold


def severity_of_offline(share: float) -> str:
    return "critical" if share >= 0.5 else "warning"


def count_by_group(rows: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for group, n in rows:
        if group is not None:
            out[group] = out.get(group, 0) + n
    return out


def webhook_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON a webhook receives for a raised or resolved alert."""
    event = "alert.raised" if alert["status"] == OPEN else "alert.resolved"
    return {"event": event, "alert": dict(alert)}
