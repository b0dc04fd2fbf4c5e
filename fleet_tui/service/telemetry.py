"""Telemetry ingest: validate, classify health, detect reboot loops, and keep time buckets
for sparklines. Everything is in memory and written to the registry in batches."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import orjson

from fleet_tui.config import HealthSettings
from fleet_tui.domain.health import (
    METRICS,
    Bucket,
    HealthState,
    HealthThresholds,
    RebootLoopDetector,
    Telemetry,
    TelemetryError,
    bucket_start,
    classify,
)
from fleet_tui.service.events import EventBus, TelemetryReceived

log = logging.getLogger(__name__)
WIDTHS = (60, 3600)
PLANNED_RESET = "sw_reboot"  # the firmware's reset reason after an OTA apply or a reboot job
BucketKey = tuple[str, str, int, int]  # device, metric, width, start


def thresholds_from(settings: HealthSettings) -> HealthThresholds:
    names = {f for f in HealthThresholds.__dataclass_fields__}
    return HealthThresholds(**{k: v for k, v in asdict(settings).items() if k in names})


class TelemetryIngest:
    def __init__(self, events: EventBus, settings: HealthSettings | None = None) -> None:
        self.events = events
        self.settings = settings or HealthSettings()
        self.thresholds = thresholds_from(self.settings)
        self.latest: dict[str, tuple[str, dict[str, object]]] = {}
        self.loops: dict[str, RebootLoopDetector] = {}
        self.last_errors: dict[str, int] = {}
        self.buckets: dict[BucketKey, Bucket] = {}
        self.dirty_health: set[str] = set()
        self.dirty_buckets: set[BucketKey] = set()
        self.rejected = 0

    def on_telemetry(self, thing: str, payload: bytes, now: float) -> bool:
        """Ingest one message; False when it was malformed (nothing is stored then)."""
        try:
            data = orjson.loads(payload)
            if not isinstance(data, dict):
                raise TelemetryError("payload", "expected a JSON object")
            sample = Telemetry.from_payload(data)
        except (orjson.JSONDecodeError, TelemetryError) as err:
            self.rejected += 1
            log.debug("bad telemetry from %s: %s", thing, err)
            return False
        detector = self.loops.setdefault(thing, RebootLoopDetector())
        rebooted = detector.observe(now, sample.uptime_s,
                                    planned=sample.reset_reason == PLANNED_RESET)
        # Devices count errors since boot; health thresholds are per telemetry interval.
        previous = self.last_errors.get(thing)
        self.last_errors[thing] = sample.errors
        if previous is not None and not rebooted and sample.errors >= previous:
            sample = replace(sample, errors=sample.errors - previous)
        state, reasons = classify(sample, self.thresholds)
        if detector.in_loop(now):
            state = HealthState.UNHEALTHY
            reasons = [*reasons, f"reboot loop: {detector.resets_in_window(now)} resets"]
        record = {**asdict(sample), "received": now, "reasons": reasons}
        self.latest[thing] = (state.value, record)
        self.dirty_health.add(thing)
        for metric in METRICS:
            value = float(getattr(sample, metric))
            for width in WIDTHS:
                key = (thing, metric, width, bucket_start(now, width))
                bucket = self.buckets.get(key)
                if bucket is None:
                    bucket = self.buckets[key] = Bucket()
                bucket.add(value)
                self.dirty_buckets.add(key)
        self.events.emit(TelemetryReceived(thing, state.value, tuple(reasons), record))
        return True

    def take_health(self) -> list[tuple[str, str | None, dict[str, object] | None]]:
        dirty, self.dirty_health = self.dirty_health, set()
        return [(t, *self.latest[t]) for t in dirty]

    def take_buckets(self, now: float) -> list[dict[str, object]]:
        """Rows for the dirty buckets; closed buckets leave memory once written."""
        dirty, self.dirty_buckets = self.dirty_buckets, set()
        rows = []
        for key in dirty:
            b = self.buckets[key]
            rows.append({"device_id": key[0], "metric": key[1], "width": key[2],
                         "start": key[3], "count": b.count, "total": b.sum, "min": b.min,
                         "max": b.max, "last": b.last if b.last is not None else 0.0})
        for key in [k for k in self.buckets if k[3] + k[2] < now and k not in self.dirty_buckets]:
            del self.buckets[key]
        return rows
