"""FleetService: the "cloud". One MQTT session feeding the shadow service, presence and
telemetry ingest; batched writes to the registry. Runs alone (``fleet-tui serve``) or inside
the console's process (on its own thread and event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from fleet_tui.config import Settings
from fleet_tui.domain.health import expiry_cutoff
from fleet_tui.registry.registry import Registry
from fleet_tui.service.automation import install as install_automation
from fleet_tui.service.automation import shutdown as shutdown_automation
from fleet_tui.service.events import EventBus
from fleet_tui.service.jobs import JobsEngine
from fleet_tui.service.mqtt import MqttSession
from fleet_tui.service.partitions import Partitions
from fleet_tui.service.presence import PresenceTracker
from fleet_tui.service.rollouts import RolloutEngine
from fleet_tui.service.shadows import ShadowService
from fleet_tui.service.telemetry import WIDTHS, TelemetryIngest
from fleet_tui.service.topics import Topics, valid_thing

log = logging.getLogger(__name__)


def service_client_id(settings: Settings) -> str:
    """The MQTT client id of `fleet-tui serve`: stable across restarts, so the broker
    queues the requests that arrive while it restarts (give each worker its own)."""
    return settings.service_id or f"fleet-tui-service-{socket.gethostname()}"


class FleetService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.time,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.events = events or EventBus()
        self.topics = Topics(settings.shadow_prefix, settings.fleet_prefix)
        self.shadows = ShadowService(registry, self.topics, settings.shadow, self.events, clock)
        self.presence = PresenceTracker(self.events, self._interval_for,
                                        settings.health.gone_dark_intervals)
        self.telemetry = TelemetryIngest(self.events, settings.health)
        # `serve` passes a stable id (see service_client_id) and keeps its session; an
        # embedded service (the console's) gets a per-process id and a clean session.
        self.client_id = client_id or f"fleet-tui-service-{socket.gethostname()}-{os.getpid()}"
        stable = client_id is not None and client_id == service_client_id(settings)
        self.partitions: Partitions | None = None
        if settings.shadow.partitions > 0:
            self.partitions = Partitions(registry, self.client_id, settings.shadow.partitions,
                                         settings.shadow.partition_lease_ttl_s, clock)
            self.partitions.on_gain = self.shadows.take_partitions
            self.partitions.on_loss = self.shadows.drop_partitions
            self.shadows.partitions = self.partitions
        self.jobs = JobsEngine(settings, registry, self.topics, shadows=self.shadows,
                               presence=self.presence, telemetry=self.telemetry,
                               events=self.events, clock=clock, holder=self.client_id)
        self.jobs.rollouts = RolloutEngine(registry, self.jobs)
        install_automation(self)  # schedules, maintenance windows, policies, alerts
        subscriptions = self.topics.service_subscriptions()
        if settings.jobs.engine:
            subscriptions += self.topics.jobs_subscriptions()
        self.session = MqttSession(
            settings.broker_host, settings.broker_port, self.client_id,
            subscriptions, self.dispatch,
            session_expiry_s=settings.session_expiry_s if stable else 0,
            tls_context=settings.ssl_context(), username=settings.mqtt_credentials()[0],
            password=settings.mqtt_credentials()[1], mqtt5=settings.mqtt_version == "5",
        )
        self.ready = asyncio.Event()
        self.ingest_interval = 1.0
        self.bucket_interval = 10.0
        self.sweep_interval = 5.0
        self.ignored_topics = 0

    def _interval_for(self, thing: str) -> float:
        doc = self.shadows.document(thing)
        value = doc.reported.get("telemetry_interval_s") if doc is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        return self.settings.health.telemetry_interval_s

    # ---------------------------------------------------------------- dispatch

    def dispatch(self, topic: str, payload: bytes) -> None:
        shadow = self.topics.parse_shadow(topic)
        if shadow is not None:
            self.shadows.handle(shadow, payload)
            return
        jobs = self.topics.parse_jobs(topic)
        if jobs is not None:
            if self.settings.jobs.engine:
                self.jobs.handle(jobs, payload)
            return
        fleet = self.topics.parse_fleet(topic)
        if fleet is None or not valid_thing(fleet.thing):
            # No reply topic for presence/telemetry: count it, never store it.
            self.ignored_topics += 1
            log.debug("ignored message on %r", topic)
            return
        now = self.clock()
        if fleet.kind == "presence":
            self.presence.on_presence(fleet.thing, payload, now)
        elif self.telemetry.on_telemetry(fleet.thing, payload, now):
            self.presence.on_seen(fleet.thing, now)

    # --------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then flush everything and return."""
        # Partitioned: documents load per partition as its lease is taken.
        loaded = 0 if self.partitions else await asyncio.to_thread(self.shadows.load)
        state = await asyncio.to_thread(self.registry.presence_state)
        self.presence.restore(state, self.clock())
        log.info("loaded %d shadows, %d devices online", loaded, len(state))
        # The connection outlives the other tasks: their last flushes still publish what
        # they committed (while stopping, nothing waits for a reconnection).
        session_stop = asyncio.Event()
        self.session.draining = stop
        mqtt_task = asyncio.create_task(self.session.run(session_stop), name="mqtt")
        tasks = [
            asyncio.create_task(self.shadows.run(self.session.publish_many, stop), name="shadows"),
            asyncio.create_task(self._ingest_loop(stop), name="ingest"),
        ]
        if self.settings.jobs.engine:
            tasks.append(asyncio.create_task(self.jobs.run(self.session.publish_many, stop),
                                             name="jobs"))
        if self.partitions is not None:
            tasks.append(asyncio.create_task(self.partitions.run(stop), name="partitions"))
        self.ready.set()
        try:
            pending = {*tasks, mqtt_task}
            while pending - {mqtt_task}:  # until the others end (stop) or one fails
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(task, 10)
            session_stop.set()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(mqtt_task, 10)
            if self.partitions is not None:  # after the last shadow flush
                await self.partitions.release()
            await asyncio.to_thread(self._flush_ingest, True)
            await asyncio.to_thread(shutdown_automation, self)

    async def _ingest_loop(self, stop: asyncio.Event) -> None:
        last_buckets = last_sweep = last_purge = self.clock()
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ingest_interval)
            now = self.clock()
            if now - last_sweep >= self.sweep_interval:
                self.presence.sweep(now)
                last_sweep = now
            with_buckets = now - last_buckets >= self.bucket_interval
            if with_buckets:
                last_buckets = now
            try:
                await asyncio.to_thread(self._flush_ingest, with_buckets)
                if now - last_purge >= 3600:
                    last_purge = now
                    await asyncio.to_thread(self._purge, now)
            except Exception:
                log.exception("ingest flush failed; will retry")

    def _flush_ingest(self, with_buckets: bool) -> None:
        presence = self.presence.take_pending()
        health = self.telemetry.take_health()
        if presence or health:
            self.registry.record_ingest(presence, health)
        if with_buckets:
            self.registry.save_metric_buckets(self.telemetry.take_buckets(self.clock()))

    def _purge(self, now: float) -> None:
        for width in WIDTHS:
            self.registry.purge_metric_buckets(width, expiry_cutoff(width, now))

    def stats(self) -> dict[str, Any]:
        parts = ({"partitions": len(self.partitions.owned)}
                 if self.partitions is not None else {})
        return {**self.shadows.stats, **parts, "shadows": len(self.shadows.shadows),
                "engine": {**self.jobs.stats, "leader": self.jobs.is_leader},
                "bad_presence": self.presence.rejected, "bad_telemetry": self.telemetry.rejected,
                "ignored_topics": self.ignored_topics}
