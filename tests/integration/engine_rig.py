"""A whole fleet in one test: a real mosquitto, a SQLite or PostgreSQL registry with the
sample releases, an HTTP server for the firmware images, the real FleetService (shadows,
presence, telemetry, job and rollout engine) and simulated devices speaking the
firmware's protocol."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fleet_tui.config import Settings
from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import Registry
from fleet_tui.service.fleet_service import FleetService
from fleet_tui.sim.fleet import Fleet, device_config
from tests.integration.devices import file_server
from tests.integration.mosquitto import Mosquitto

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def fleet_rows(n: int, *, firmware: str = "2.2.0", sites: int = 2) -> list[dict[str, Any]]:
    """``n`` devices spread over three hardware revisions and ``sites`` sites."""
    revs = ("rev-a", "rev-b", "rev-c")
    return [{"id": f"dev-{i:03d}", "hardware_rev": revs[i % 3], "firmware_version": firmware,
             "tags": {"site": f"site-{(i // 3) % sites}",
                      "deployment_ring": "canary" if i < 3 else "early" if i < 9 else "general"}}
            for i in range(n)]


def write_fleet_dir(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "devices.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    (path / "groups.json").write_text(
        '[{"name": "plant", "kind": "dynamic", "query": "tag.site ~ \\"site-*\\""}]')
    shutil.copy(SAMPLE / "releases.json", path / "releases.json")
    return path


@contextlib.contextmanager
def firmware_server() -> Iterator[str]:
    with file_server(SAMPLE) as url:
        yield url + "/"


@dataclass
class EngineRig:
    broker: Mosquitto
    registry: Registry
    settings: Settings
    rows: list[dict[str, Any]]
    service: FleetService | None = None
    fleet: Fleet | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start_service(self) -> FleetService:
        self._stop = asyncio.Event()
        self.service = FleetService(self.settings, self.registry,
                                    client_id=f"svc-{time.monotonic_ns()}")
        self._task = asyncio.create_task(self.service.run(self._stop))
        await asyncio.wait_for(self.service.session.connected.wait(), 10)
        await self.until(lambda: self.service is not None and self.service.jobs.is_leader,
                         10, "the engine lease")
        return self.service

    async def stop_service(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 20)
        self._task = None

    async def start_fleet(self, ids: list[str] | None = None, **options: Any) -> Fleet:
        rows = [r for r in self.rows if ids is None or r["id"] in ids]
        options.setdefault("boot_delay_s", 0.1)
        options.setdefault("telemetry_interval_s", 1)
        options.setdefault("confirm_timeout_s", 5.0)
        options.setdefault("firmware_base_url", self.settings.jobs.firmware_base_url)
        configs = [device_config(r, **options) for r in rows]
        self.fleet = Fleet(configs, self.broker.host, self.broker.port, connect_rate=0)
        await self.fleet.start()
        assert await self.fleet.wait_connected(timeout=30)
        return self.fleet

    async def until(self, predicate: Callable[[], Any], timeout: float = 30.0,
                    what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await asyncio.to_thread(predicate)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.2)

    def reported(self, thing: str) -> dict[str, Any]:
        assert self.service is not None
        doc = self.service.shadows.document(thing)
        return dict(doc.reported) if doc is not None else {}

    def desired(self, thing: str) -> dict[str, Any]:
        assert self.service is not None
        doc = self.service.shadows.document(thing)
        return dict(doc.desired) if doc is not None else {}


@contextlib.asynccontextmanager
async def engine_rig(broker: Mosquitto, db_url: str, tmp_path: Path, base_url: str, *,
                     rows: list[dict[str, Any]] | None = None, tick_s: float = 0.2
                     ) -> AsyncIterator[EngineRig]:
    rows = rows if rows is not None else fleet_rows(12)
    registry = Registry.open(db_url)
    import_fleet(registry, write_fleet_dir(tmp_path / "fleet", rows))
    settings = Settings(db=db_url, broker=broker.url, operator="alice", role="approver")
    settings.jobs.tick_s = tick_s
    settings.jobs.lease_ttl_s = 3.0
    settings.jobs.firmware_base_url = base_url
    settings.health.telemetry_interval_s = 1.0
    settings.shadow.flush_interval_ms = 10
    rig = EngineRig(broker, registry, settings, rows)
    try:
        yield rig
    finally:
        if rig.fleet is not None:
            await rig.fleet.stop()
        if rig._task is not None:
            await rig.stop_service()
        registry.close()
