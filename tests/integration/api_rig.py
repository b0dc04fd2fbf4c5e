"""The Fleet HTTP API for real: uvicorn on a free port in a thread, over a real registry,
with the real FleetService (shadows, engine) on its own thread and event loop, through a
real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from fleet_tui.api.app import create_app
from fleet_tui.api.auth import TokenTable
from fleet_tui.config import Settings
from fleet_tui.registry.registry import Registry
from fleet_tui.service.fleet_service import FleetService
from tests.integration.mosquitto import free_port

TOKENS = {
    "viewer-token-0000000000": "vera:viewer",
    "operator-token-00000000": "olga:operator",
    "approver-token-00000000": "anna:approver",
    "approver2-token-0000000": "bert:approver",
}
VIEWER, OPERATOR, APPROVER, APPROVER2 = (
    {"Authorization": f"Bearer {t}"} for t in TOKENS)


class ServiceThread:
    """A FleetService running on its own event loop in a thread."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.service = FleetService(settings, registry, client_id=f"api-svc-{time.monotonic_ns()}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.service.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as err:  # surfaced by the test through .error
            self.error = err

    def start(self, timeout: float = 15.0) -> ServiceThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self.service.session.connected.is_set() and self.service.jobs.is_leader):
            if time.monotonic() > deadline or self.error is not None:
                raise AssertionError(f"service did not start: {self.error}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


@dataclass
class ApiServer:
    url: str
    registry: Registry
    settings: Settings
    service: ServiceThread | None

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers or {}, timeout=30)


@contextlib.contextmanager
def api_server(registry: Registry, settings: Settings, *, with_service: bool = True
               ) -> Iterator[ApiServer]:
    service = ServiceThread(settings, registry).start() if with_service else None
    port = free_port()
    app = create_app(registry, settings, TokenTable.parse(TOKENS))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", registry, settings, service)
    finally:
        server.should_exit = True
        thread.join(10)
        if service is not None:
            service.stop()


def api_settings(db_url: str, broker_url: str, **jobs: Any) -> Settings:
    settings = Settings(db=db_url, broker=broker_url, operator="ci", role="approver")
    settings.jobs.tick_s = 0.2
    settings.jobs.lease_ttl_s = 3.0
    settings.shadow.flush_interval_ms = 10
    settings.automation.evaluate_s = 0.5
    for k, v in jobs.items():
        setattr(settings.jobs, k, v)
    return settings
