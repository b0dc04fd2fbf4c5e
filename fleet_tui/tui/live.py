"""The in-process service, off the UI's event loop.

The FleetService runs on its own thread with its own asyncio loop, so 10k shadow updates a
second never delay a key press. Its events land in a buffer (the listener only stores the
latest value per key); every ~250 ms the buffer is swapped out and posted to the app as one
:class:`FleetUpdated` message. ``post_message`` is thread-safe and, unlike
``call_from_thread``, never makes the service wait for the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, Protocol

from textual.message_pump import MessagePump

from fleet_tui.config import Settings
from fleet_tui.service.client import ShadowClient
from fleet_tui.service.events import (
    Event,
    EventBus,
    PresenceChanged,
    ShadowChanged,
    ShadowDeleted,
    TelemetryReceived,
)
from fleet_tui.tui.messages import FleetBatch, FleetUpdated

log = logging.getLogger(__name__)


class RunnableService(Protocol):
    """What the console needs of a service: ``FleetService`` and test doubles."""

    events: EventBus

    async def run(self, stop: asyncio.Event) -> None: ...


class ShadowWriter(Protocol):
    """Sends a desired-state update to the shadow service and returns its ``/accepted``
    answer (raises :class:`~fleet_tui.service.client.ServiceError` on ``/rejected``).
    Called from a thread worker, never on the UI's loop."""

    def update_desired(self, thing: str, desired: dict[str, Any], name: str,
                       version: int | None) -> dict[str, Any]: ...


class ClientShadowWriter:
    """Writes through the service's own MQTT API (the service client), exactly as any AWS
    IoT app would: the same path whether the service runs in this process or elsewhere."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.client = ShadowClient(settings, timeout)

    def update_desired(self, thing: str, desired: dict[str, Any], name: str,
                       version: int | None) -> dict[str, Any]:
        return asyncio.run(self.client.update_desired(thing, desired, name, version))


class ServiceBridge:
    """Runs ``service`` on a daemon thread and posts batched updates to ``target``."""

    def __init__(
        self, service: RunnableService, target: MessagePump, interval: float = 0.25
    ) -> None:
        self.service = service
        self.target = target
        self.interval = interval
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._batch = FleetBatch()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._unsubscribe: Any = None

    # ------------------------------------------------------------ service side

    def on_event(self, event: Event) -> None:
        """The service's listener: cheap, it only records the latest value per key."""
        with self._lock:
            batch = self._batch
            if isinstance(event, ShadowChanged):
                batch.shadows[(event.thing, event.name)] = event.documents
            elif isinstance(event, ShadowDeleted):
                batch.shadows[(event.thing, event.name)] = {
                    "current": {"exists": False, "version": event.version}}
            elif isinstance(event, PresenceChanged):
                batch.presence[event.thing] = event.online
            elif isinstance(event, TelemetryReceived):
                batch.health[event.thing] = event.health

    def take_batch(self) -> FleetBatch:
        with self._lock:
            batch, self._batch = self._batch, FleetBatch()
        return batch

    def flush(self) -> None:
        batch = self.take_batch()
        if batch:
            self.target.post_message(FleetUpdated(batch))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._started.set()
        runner = asyncio.create_task(self.service.run(self._stop), name="fleet-service")
        try:
            while not runner.done():
                await asyncio.wait({runner}, timeout=self.interval)
                self.flush()
            await runner
        except Exception as err:  # shown by the app; the console keeps working on the registry
            log.exception("the fleet service stopped")
            self.error = err
        finally:
            self.flush()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    # ------------------------------------------------------------------ UI side

    def start(self) -> None:
        self._unsubscribe = self.service.events.subscribe(self.on_event)
        self._thread = threading.Thread(target=self._thread_main, name="fleet-service",
                                        daemon=True)
        self._thread.start()
        self._started.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
