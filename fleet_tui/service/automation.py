"""Wires scheduling, maintenance windows, policies and alerts into a FleetService's
engine: the engine calls them on every tick of the lease holder (see
``JobsEngine.participants`` and ``JobsEngine.release_gate``)."""

from __future__ import annotations

from typing import Any

from fleet_tui.service.alerts import AlertMonitor, WebhookSender
from fleet_tui.service.policies import PolicyEngine
from fleet_tui.service.scheduler import Scheduler, WindowGate


def install(service: Any) -> None:
    settings = service.settings.automation
    registry, engine = service.registry, service.jobs
    webhook = WebhookSender(registry, settings.webhook_url) if settings.webhook_url else None
    service.scheduler = Scheduler(registry)
    service.policies = PolicyEngine(registry, engine, evaluate_s=settings.evaluate_s,
                                    policies_file=settings.policies_file)
    service.alerts = AlertMonitor(registry, engine, evaluate_s=settings.evaluate_s,
                                  offline_share=settings.offline_spike_share, webhook=webhook)
    engine.participants += [service.scheduler, service.policies, service.alerts]
    engine.release_gate = WindowGate(registry)


def shutdown(service: Any) -> None:
    """Stop what ``install`` started that outlives the engine's ticks: the webhook's
    delivery thread (it polled the registry every 30 s after the service had stopped)."""
    if service.alerts.webhook is not None:
        service.alerts.webhook.close()
