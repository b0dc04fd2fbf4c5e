"""Group health: counts, averages, anomalies and unhealthy devices from the registry."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fleet_tui.domain.health import (
    DeviceHealth,
    GroupHealth,
    HealthState,
    Telemetry,
    TelemetryError,
    group_anomalies,
)
from fleet_tui.registry.registry import Registry


def group_health_report(
    registry: Registry, *, group: str | None = None, where: str | None = None
) -> dict[str, Any]:
    devices: list[DeviceHealth] = []
    unhealthy: list[dict[str, Any]] = []
    for device_id, online, health, _last_seen, record in registry.health_records(
        group=group, where=where
    ):
        sample = None
        if record:
            try:
                sample = Telemetry.from_payload(record)
            except TelemetryError:
                sample = None
        state = HealthState(health) if health in {s.value for s in HealthState} else None
        devices.append(DeviceHealth(device_id, online, state, sample))
        if online and state in (HealthState.DEGRADED, HealthState.UNHEALTHY):
            unhealthy.append({"device_id": device_id, "health": health,
                              "reasons": list((record or {}).get("reasons", []))})
    summary = GroupHealth.from_devices(devices)
    anomalies = group_anomalies(devices, method="mad") + group_anomalies(devices, method="zscore")
    return {
        "group": group,
        "summary": asdict(summary),
        "anomalies": [asdict(a) for a in anomalies],
        "unhealthy": unhealthy,
    }
