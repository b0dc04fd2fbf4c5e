"""Alerts: raised and resolved by the health rules (offline spikes, anomalies, gone dark,
rollout halted, gate failed) and by policies; deduplicated (one open alert per kind and
subject, counting repeats); counted per group (the guide's ``recent_alerts``); delivered
to a webhook at least once (each raise and each resolve, retried until it answers 2xx).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fleet_tui.domain import roles
from fleet_tui.domain.alerts import (
    OPEN,
    RESOLVED,
    AlertSignal,
    offline_spike,
    reconcile,
    severity_of_offline,
    webhook_payload,
)
from fleet_tui.domain.health import mad_outliers
from fleet_tui.domain.rollout import HALTED, WAVE_FAILED
from fleet_tui.registry.automation_store import AlertRow
from fleet_tui.registry.errors import NotFound
from fleet_tui.registry.registry import GroupNode, Registry
from fleet_tui.service.evaluation import PreparedStep
from fleet_tui.service.events import PresenceChanged

log = logging.getLogger(__name__)
HEALTH_KINDS = ("offline_spike", "anomaly", "gone_dark", "rollout_halted", "gate_failed")
ANOMALY_METRICS = ("heap_free", "cpu_pct", "temp_c")


# ------------------------------------------------------------ service-layer functions

def list_alerts(registry: Registry, *, status: str | None = None, group: str | None = None,
                kind: str | None = None, limit: int = 100) -> list[AlertRow]:
    return registry.automation.list_alerts(status=status, group=group, kind=kind, limit=limit)


def recent_alert_counts(registry: Registry, *, window_s: float = 86400.0,
                        now: float | None = None) -> dict[str, int]:
    """Alerts seen in the last ``window_s`` per group (open or since resolved)."""
    now = time.time() if now is None else now
    return registry.automation.counts_by_group(now - window_s)


def open_alert_summary(registry: Registry) -> dict[str, int]:
    """Open alerts by severity (for the console's header)."""
    out = {"critical": 0, "warning": 0, "info": 0}
    for a in registry.automation.list_alerts(status=OPEN, limit=10_000):
        out[a.severity] = out.get(a.severity, 0) + 1
    return out


def resolve_alert(registry: Registry, alert_id: int, actor: Any) -> AlertRow:
    """An operator resolves an alert by hand (it is raised again if its cause persists).
    roles.py has no alert permission yet: it takes an operator (``edit_groups``)."""
    actor.require(roles.EDIT_GROUPS)
    now = time.time()
    with registry.locked() as conn:
        alert = registry.automation.get_alert(alert_id, conn)
        if alert.status != OPEN:
            raise NotFound(f"alert {alert_id} is not open")
        registry.automation.update_alerts(conn, [alert_id], status=RESOLVED, resolved_at=now)
        registry.audit.append(conn, actor.name, actor.role, "alert.resolve", str(alert_id),
                              {"key": alert.key}, ts=now)
    return registry.automation.get_alert(alert_id)


def apply_signals(registry: Registry, conn: Any, signals: Sequence[AlertSignal], now: float,
                  *, may_resolve: Callable[[str], bool], kinds: Sequence[str] | None = None,
                  key_prefix: str | None = None) -> tuple[int, int]:
    """Raise new alerts, refresh repeated ones, resolve open ones whose signal stopped
    (among those ``may_resolve`` says this evaluation covers). Returns (raised, resolved).
    One audit entry per evaluation lists what was raised and resolved (with evidence)."""
    store = registry.automation
    # ``kinds`` / ``key_prefix`` narrow the read to the alerts this caller owns.
    open_by_key = store.open_alerts(conn, kinds, key_prefix)
    scope = [k for k in open_by_key if may_resolve(k)]
    plan = reconcile(scope, [s for s in signals if may_resolve(s.key)],
                     {k.split(":", 1)[0] for k in scope} | {s.kind for s in signals})
    raised: list[dict[str, Any]] = []
    for s in plan.raise_new:
        if s.key in open_by_key:
            continue
        alert_id = store.insert_alert(conn, {
            "key": s.key, "kind": s.kind, "severity": s.severity, "group_name": s.group,
            "subject": s.subject, "message": s.message, "details": s.details,
            "status": OPEN, "count": 1, "raised_at": now, "last_seen": now,
            "resolved_at": None, "notified": None})
        raised.append({"id": alert_id, "key": s.key, "severity": s.severity,
                       "message": s.message, "evidence": s.details})
    unchanged = []
    for s in plan.refresh:
        row = open_by_key[s.key]
        if (row.severity, row.message, row.details) == (s.severity, s.message, s.details):
            unchanged.append(row.id)
        else:
            store.refresh_alert(conn, row.id, now, s.severity, s.message, s.details)
    store.touch_alerts(conn, unchanged, now)
    resolved = [open_by_key[k].id for k in plan.resolve]
    store.update_alerts(conn, resolved, status=RESOLVED, resolved_at=now)
    if raised:
        registry.audit.append(conn, "alerts", "system", "alert.raise",
                              ",".join(str(r["id"]) for r in raised[:20]),
                              {"alerts": raised[:200], "count": len(raised)}, ts=now)
    if resolved:
        registry.audit.append(conn, "alerts", "system", "alert.resolve",
                              ",".join(str(i) for i in resolved[:20]),
                              {"keys": plan.resolve[:200], "count": len(resolved)}, ts=now)
    return len(raised), len(resolved)


def all_groups(registry: Registry) -> list[GroupNode]:
    out: list[GroupNode] = []
    stack = list(registry.group_tree())
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    return sorted(out, key=lambda n: n.name)


def group_members(registry: Registry, conn: Any, name: str) -> list[str]:
    return list(conn.execute(registry.group_ids(name)).scalars())


# ------------------------------------------------------------------ health rules

class AlertMonitor(PreparedStep):
    """Tick participant: evaluates the health rules every ``evaluate_s`` outside the lock
    (see ``evaluation.py``); the tick raises and resolves what the evaluation found."""

    def __init__(self, registry: Registry, engine: Any, *, evaluate_s: float = 10.0,
                 offline_share: float = 0.2, webhook: WebhookSender | None = None) -> None:
        super().__init__(evaluate_s)
        self.registry = registry
        self.engine = engine  # the JobsEngine: presence, telemetry
        self.offline_share = offline_share
        self.webhook = webhook
        self.gone_dark: dict[str, float] = {}
        engine.events.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, PresenceChanged):
            if not event.online and event.reason == "gone-dark":
                self.gone_dark[event.thing] = event.ts
            elif event.online:
                self.gone_dark.pop(event.thing, None)

    def evaluate(self, now: float) -> list[AlertSignal]:
        with self.registry.engine.connect() as conn:
            return self.signals(conn, now)

    def signals(self, conn: Any, now: float) -> list[AlertSignal]:
        presence, telemetry = self.engine.presence, self.engine.telemetry
        out: list[AlertSignal] = []
        for node in all_groups(self.registry):
            ids = group_members(self.registry, conn, node.name)
            if not ids:
                continue
            offline = sum(1 for d in ids if not presence.online.get(d))
            share = offline / len(ids)
            if offline_spike(share, len(ids), threshold=self.offline_share):
                out.append(AlertSignal(
                    "offline_spike", node.name, severity_of_offline(share),
                    f"{offline} of {len(ids)} devices offline ({share:.0%})", node.name,
                    {"offline": offline, "total": len(ids), "share": round(share, 3)}))
            if node.children:
                continue  # anomalies are judged in the most specific group only
            latest = {d: telemetry.latest[d][1] for d in ids
                      if d in telemetry.latest and presence.online.get(d)}
            for metric in ANOMALY_METRICS:
                values = {d: float(t[metric]) for d, t in latest.items()
                          if isinstance(t.get(metric), (int, float))}
                for a in mad_outliers(values, metric=metric):
                    out.append(AlertSignal(
                        "anomaly", f"{a.device_id}/{metric}", "warning",
                        f"{a.device_id}: {metric} {a.value:g} is an outlier in {node.name} "
                        f"(robust z {a.score:+.1f})", node.name,
                        {"device": a.device_id, "metric": metric, "value": a.value,
                         "score": round(a.score, 2)}))
        for thing, ts in sorted(self.gone_dark.copy().items()):
            seen = time.strftime("%H:%M:%S", time.gmtime(ts))
            out.append(AlertSignal("gone_dark", thing, "warning",
                                   f"{thing} went silent (last seen {seen} UTC)",
                                   None, {"device": thing, "last_seen": ts}))
        for r in self.registry.rollouts.list_rollouts(active_only=True, limit=1000, conn=conn):
            if r.status == HALTED:
                out.append(AlertSignal("rollout_halted", r.id, "warning",
                                       f"rollout {r.id} halted: {r.reason}", r.group_name,
                                       {"rollout": r.id, "reason": r.reason}))
            wave = r.wave
            if wave is not None and wave.status == WAVE_FAILED:
                out.append(AlertSignal("gate_failed", f"{r.id}/{wave.name}", "critical",
                                       f"rollout {r.id} wave {wave.name}: gate failed: "
                                       f"{r.reason}", r.group_name,
                                       {"rollout": r.id, "wave": wave.name,
                                        "evidence": wave.evidence or {}}))
        return out

    def tick(self, conn: Any, now: float, result: Any) -> None:
        ready = self.take()
        if not ready:
            return
        _, signals = ready[-1]  # the newest judgement supersedes older ones
        try:
            with conn.begin_nested():
                apply_signals(self.registry, conn, signals, now, kinds=HEALTH_KINDS,
                              may_resolve=lambda key: key.split(":", 1)[0] in HEALTH_KINDS)
        except Exception:  # the alert sweep never stops the engine's tick
            log.exception("alert evaluation failed")

    def after_tick(self, now: float) -> None:
        if self.webhook is not None:
            self.webhook.kick()


# ------------------------------------------------------------------ webhook

class WebhookSender:
    """POSTs every raise and resolve to ``url`` (JSON), in order, from its own thread;
    what the webhook did not accept (no answer, not 2xx) is retried with backoff."""

    def __init__(self, registry: Registry, url: str, *, timeout_s: float = 5.0) -> None:
        self.registry = registry
        self.url = url
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failures = 0
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def kick(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="alert-webhook",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the delivery thread once its POST in flight (if any) is answered; what it
        did not deliver stays undelivered in the registry, for the next service."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(30)
            self._wake.clear()
            if self._closed or time.monotonic() < self._retry_at:
                continue
            try:
                self.deliver_pending()
            except Exception:
                log.exception("alert webhook delivery failed")

    def deliver_pending(self) -> int:
        sent = 0
        for alert in self.registry.automation.undelivered():
            if self._closed:
                break
            if not self._post(webhook_payload(alert.to_dict())):
                self.failures += 1
                self._retry_at = time.monotonic() + min(60.0, 2.0 ** min(self.failures, 6))
                break
            self.failures = 0
            self.registry.automation.mark_delivered(alert.id, alert.status)
            sent += 1
        self.delivered += sent
        return sent

    def _post(self, body: dict[str, Any]) -> bool:
        req = urllib.request.Request(self.url, data=json.dumps(body, default=str).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return 200 <= resp.status < 300
        except (urllib.error.URLError, OSError, ValueError) as err:
            log.warning("alert webhook %s: %s", self.url, err)
            return False


def kinds_of(alerts: Iterable[AlertRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in alerts:
        out[a.kind] = out.get(a.kind, 0) + 1
    return out
