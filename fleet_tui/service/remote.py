"""A running ``fleet-tui serve`` seen from another process through the broker.

The console attaches with this instead of running the service itself: the same
:class:`EventBus` events (shadow documents, presence, telemetry with its health), read from
the topics the service publishes (``update/documents``) and the devices publish (presence,
telemetry). Health is classified here with the same thresholds the service uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fleet_tui.config import Settings
from fleet_tui.domain.health import Telemetry, TelemetryError, classify
from fleet_tui.service.client import ShadowClient
from fleet_tui.service.events import (
    EventBus,
    PresenceChanged,
    ShadowChanged,
    ShadowDeleted,
    TelemetryReceived,
)
from fleet_tui.service.telemetry import thresholds_from

log = logging.getLogger(__name__)


def documents_key(prefix: str, topic: str) -> tuple[str, str] | None:
    """(thing, shadow name) of a ``{prefix}/{thing}/shadow[/name/{n}]/update/documents``."""
    parts = topic.split("/")
    n = len(prefix.split("/"))
    rest = parts[n:]
    if len(rest) == 4 and rest[1:] == ["shadow", "update", "documents"]:
        return rest[0], ""
    if len(rest) == 6 and rest[1:3] == ["shadow", "name"] and rest[4:] == ["update",
                                                                          "documents"]:
        return rest[0], rest[3]
    return None


class RemoteService:
    """Events of a service running elsewhere; ``run(stop)`` reads them until ``stop``."""

    def __init__(self, settings: Settings, *, retry_s: float = 2.0) -> None:
        self.settings = settings
        self.client = ShadowClient(settings)
        self.events = EventBus()
        self.thresholds = thresholds_from(settings.health)
        self.retry_s = retry_s
        self.connected = asyncio.Event()

    def handle(self, kind: str, payload: dict[str, Any]) -> None:
        topic = str(payload.get("topic", ""))
        thing = topic.split("/")[-2] if kind in ("presence", "telemetry") else ""
        if kind == "documents":
            key = documents_key(self.settings.shadow_prefix, topic)
            if key is None:
                return
            current = payload.get("current")
            if isinstance(current, dict) and current.get("exists") is False:
                self.events.emit(ShadowDeleted(key[0], key[1], int(current.get("version", 0))))
            else:
                docs = {k: v for k, v in payload.items() if k != "topic"}
                self.events.emit(ShadowChanged(key[0], key[1], docs))
        elif kind == "presence":
            state = payload.get("state")
            if state in ("online", "offline"):
                self.events.emit(PresenceChanged(thing, state == "online", "presence",
                                                 float(payload.get("ts") or 0)))
        elif kind == "telemetry":
            try:
                sample = Telemetry.from_payload(payload)
            except TelemetryError:
                return
            state, reasons = classify(sample, self.thresholds)
            self.events.emit(TelemetryReceived(thing, state.value, tuple(reasons), payload))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            reader = asyncio.ensure_future(self._read())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_s)

    async def _read(self) -> None:
        try:
            async for kind, payload in self.client.events(on_connect=self.connected.set):
                self.handle(kind, payload)
        except Exception as err:  # broker away: the console keeps working on the registry
            log.warning("attached service events: %s; retrying", err)
