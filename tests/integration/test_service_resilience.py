"""The service under failure: presence via a real last will, broker restarts, kill -9 of the
service process (on SQLite and PostgreSQL), and 10,000 malformed payloads (SQLite)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleet_tui.registry.registry import NewDevice, Registry
from fleet_tui.service.topics import Topics
from tests.integration.mosquitto import Mosquitto
from tests.integration.service_harness import peer, running_service, settings_for

T = Topics()


async def eventually(check: Any, timeout: float = 10.0, every: float = 0.1) -> None:
    """Wait until ``check()`` is true; exceptions count as "not yet" until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'svc.db'}")
    try:
        yield reg
    finally:
        reg.close()


async def test_presence_follows_connect_and_the_last_will(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    thing = "esp32-lwt"
    async with running_service(settings, registry) as svc:
        # A device process with a last will; kill -9 gives the broker no DISCONNECT.
        device = subprocess.Popen([
            "mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-i", thing,
            "-t", f"{T.shadow_prefix}/{thing}/shadow/update/delta", "-k", "5",
            "--will-topic", T.presence(thing), "--will-payload", '{"state":"offline"}',
            "--will-qos", "1", "--will-retain",
        ])
        try:
            async with peer(mosquitto.url, []) as dev:
                await dev.publish(T.presence(thing), {"state": "online", "ts": time.time()},
                                  retain=True)
            await eventually(lambda: svc.presence.online.get(thing) is True)
            await asyncio.sleep(0.3)
            os.kill(device.pid, signal.SIGKILL)
            device.wait(5)
            await eventually(lambda: svc.presence.online.get(thing) is False, timeout=15)
        finally:
            if device.poll() is None:
                device.kill()
        await eventually(lambda: not registry.get_device(thing).online, timeout=5)


async def test_telemetry_health_and_gone_dark(mosquitto: Mosquitto, registry: Registry) -> None:
    settings = settings_for(mosquitto.url, "unused")
    settings.health.telemetry_interval_s = 0.5
    registry.add_devices([NewDevice("hot"), NewDevice("fine")])
    async with running_service(settings, registry) as svc, peer(mosquitto.url, []) as dev:
        svc.sweep_interval = 0.2
        base = {"ts": time.time(), "uptime_s": 100, "heap_free": 180000, "rssi": -60,
                "cpu_pct": 20.0, "temp_c": 40.0, "reset_reason": "poweron", "errors": 0}
        await dev.publish(T.telemetry("fine"), base, qos=1)
        await dev.publish(T.telemetry("hot"), {**base, "temp_c": 91.5, "heap_free": 12000},
                          qos=1)
        await dev.publish(T.telemetry("hot"), {"ts": "yesterday"}, qos=1)  # malformed
        await eventually(lambda: svc.telemetry.rejected == 1)
        await eventually(lambda: registry.get_device("hot").health == "unhealthy")
        assert registry.get_device("fine").health == "healthy"
        assert registry.get_device("fine").online
        # Silence for 3 intervals: gone dark.
        await eventually(lambda: svc.presence.online.get("fine") is False, timeout=5)
        await eventually(lambda: not registry.get_device("fine").online, timeout=5)
    rows = registry.health_records(where='id = "hot"')
    assert rows[0][4]["temp_c"] == 91.5 and any("temp_c" in r for r in rows[0][4]["reasons"])


async def test_broker_restart_mid_stream_loses_nothing_acknowledged(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    acked: dict[str, int] = {}
    async with running_service(settings, registry) as svc:
        for phase in range(2):
            async with peer(mosquitto.url, [T.shadow("+", "", "update", "accepted")]) as dev:
                for i in range(40):
                    await dev.publish(T.shadow(f"r-{i % 4}"),
                                      {"state": {"reported": {"seq": phase * 100 + i}},
                                       "clientToken": f"{phase}-{i}"})
                await dev.wait_for(lambda t, p: len(dev.received("/accepted")) == 40)
                for topic, payload in dev.inbox:
                    thing = topic.split("/")[2]
                    acked[thing] = max(acked.get(thing, 0), payload["version"])
            if phase == 0:
                mosquitto.restart(down_for=0.5)
                await eventually(lambda: svc.session.connections >= 2, timeout=20)
                await asyncio.wait_for(svc.session.connected.wait(), 10)
    stored = {t: v for t, _n, v, _d in registry.load_shadows()}
    assert stored == acked == {f"r-{i}": 20 for i in range(4)}


def _serve(db: str, broker: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLEET_TUI_DB": db, "FLEET_TUI_BROKER": broker,
           "FLEET_TUI_CONFIG": str(tmp / "none.toml")}
    return subprocess.Popen([sys.executable, "-m", "fleet_tui.cli", "serve"], env=env,
                            stdout=(tmp / "serve.log").open("ab"), stderr=subprocess.STDOUT)


async def test_kill_9_of_the_service_keeps_every_acknowledged_update(
    mosquitto: Mosquitto, tmp_path: Path, db_url: str
) -> None:
    db = db_url
    Registry.open(db).close()
    proc = _serve(db, mosquitto.url, tmp_path)
    acked: dict[int, int] = {}  # seq -> version
    try:
        async with peer(mosquitto.url, [T.shadow("k-1", "", "update", "+")]) as dev:
            async def wait_ready() -> None:
                for attempt in range(100):
                    await dev.publish(T.shadow("k-1"), {"state": {"reported": {"boot": attempt}},
                                                        "clientToken": f"boot{attempt}"})
                    try:
                        await dev.wait_for(lambda t, p: t.endswith("/accepted"), timeout=0.3)
                        return
                    except TimeoutError:
                        continue
                raise AssertionError("service did not come up")

            await wait_ready()
            dev.inbox.clear()
            for seq in range(400):
                await dev.publish(T.shadow("k-1"), {"state": {"reported": {"seq": seq}},
                                                    "clientToken": f"s{seq}"}, qos=0)
                if seq == 200:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                await asyncio.sleep(0.002)
            for topic, payload in dev.inbox:
                if topic.endswith("/accepted") and payload["clientToken"].startswith("s"):
                    acked[int(payload["clientToken"][1:])] = payload["version"]
            assert acked and max(acked) <= 200 + 1
            proc = _serve(db, mosquitto.url, tmp_path)
            dev.inbox.clear()
            await wait_ready()
            _, first = await dev.wait_for(lambda t, p: t.endswith("/accepted"))
            # Versions never go backwards across the crash.
            assert first["version"] > max(acked.values())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    registry = Registry.open(db)
    doc = registry.get_shadow("k-1")
    assert doc is not None and doc["version"] >= max(acked.values()) + 1
    registry.close()


# ------------------------------------------------------------------------- fuzzing


def fuzz_cases(n: int, seed: int = 1) -> list[tuple[str, bytes, int]]:
    """(thing, payload, expected code) for ``n`` malformed shadow updates."""
    rng = random.Random(seed)
    cases: list[tuple[str, bytes, int]] = []

    def deep(levels: int) -> Any:
        node: Any = 1
        for _ in range(levels):
            node = {"k": node}
        return node

    makers = [
        lambda: (bytes(rng.choice(b'{}[]:,"ab1 ') for _ in range(rng.randint(1, 40))) + b"{",
                 400),
        lambda: (b'{"state": {"desired": ' + b"[" * rng.randint(1, 5), 400),
        lambda: (b"\xc3\x28" + orjson.dumps({"state": {}}), 415),
        lambda: (orjson.dumps({"state": rng.choice([[], 5, "s", None, True])}), 400),
        lambda: (orjson.dumps({"state": {"desired": rng.choice([[1], 7, "x", True])}}), 400),
        lambda: (orjson.dumps({"state": {"desired": {"a": 1}},
                               "version": rng.choice(["1", -1, 1.5, True])}), 400),
        lambda: (orjson.dumps({"state": {"desired": {"a": 1}},
                               "clientToken": rng.choice([5, [], {}])}), 400),
        lambda: (orjson.dumps({"state": {"desired": {"big": "x" * rng.randint(8200, 20000)}}}),
                 413),
        lambda: (b'{"state": {"desired": {"a": "' + b"y" * 140_000 + b'"}}}', 413),
        lambda: (orjson.dumps({"state": {"desired": deep(rng.randint(7, 30))}}), 400),
        lambda: (orjson.dumps({"state": {"desired": {"a": 1}},
                               "clientToken": "t" * rng.randint(65, 300)}), 400),
        lambda: (orjson.dumps({"desired": {"a": 1}}), 400),
        lambda: (orjson.dumps({"state": {"desired": {"a": 1}}, "version": 10_000}), 409),
        lambda: (orjson.dumps({"state": {"desired": {"a": [1, None]}}}), 400),
    ]
    for i in range(n):
        if i % 50 == 49:
            cases.append((f"fz-{i}.bad!", orjson.dumps({"state": {"desired": {"a": 1}}}), 400))
            continue
        payload, code = makers[i % len(makers)]()
        cases.append((f"fz-{i}", payload, code))
    return cases


@pytest.mark.slow
async def test_ten_thousand_malformed_payloads_are_rejected_and_change_nothing(
    mosquitto: Mosquitto, sqlite_registry: Registry
) -> None:
    # SQLite only: every payload is refused before the registry, so PostgreSQL would
    # repeat 20 s of broker and parser work for the 300 documents stored first.
    registry = sqlite_registry
    settings = settings_for(mosquitto.url, "unused")
    cases = fuzz_cases(10_000)
    by_thing = {thing: code for thing, _, code in cases}
    existing = [thing for thing, _, _ in cases[:300] if "." not in thing]
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow("+", "", "update", "+")]) as dev:
        for i, thing in enumerate(existing):
            await dev.publish(T.shadow(thing), {"state": {"reported": {"ok": i}},
                                                "clientToken": f"pre{i}"}, qos=0)
        await dev.wait_for(lambda t, p: len(dev.received("/accepted")) == len(existing), 20)
        before = {k: e.doc.to_dict() for k, e in svc.shadows.shadows.items()}
        dev.inbox.clear()
        for start in range(0, len(cases), 500):
            await asyncio.gather(*(dev.publish(T.shadow(thing), payload, qos=1)
                                   for thing, payload, _ in cases[start:start + 500]))
        await dev.wait_for(lambda t, p: len(dev.received("/rejected")) >= len(cases), 120)
        got = {topic.split("/")[2]: payload["code"] for topic, payload in dev.inbox
               if topic.endswith("/update/rejected")}
        wrong = {t: (got.get(t), c) for t, c in by_thing.items() if got.get(t) != c}
        assert not wrong, list(wrong.items())[:10]
        assert dev.received("/accepted") == [] and dev.received("/delta") == []
        after = {k: e.doc.to_dict() for k, e in svc.shadows.shadows.items()}
        assert after == before
        assert svc.session.connected.is_set()
    assert len(list(registry.load_shadows())) == len(existing)


async def test_errors_since_boot_are_judged_per_interval(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    async with running_service(settings, registry) as svc, peer(mosquitto.url, []) as dev:
        base = {"ts": time.time(), "uptime_s": 100, "heap_free": 180000, "rssi": -60,
                "cpu_pct": 20.0, "temp_c": 40.0, "reset_reason": "poweron"}
        # 50 errors since boot, but only 1 new per interval afterwards: healthy again.
        for i, errors in enumerate((50, 51, 52)):
            await dev.publish(T.telemetry("e1"), {**base, "uptime_s": 100 + i, "errors": errors})
        await eventually(lambda: len(svc.telemetry.last_errors) == 1
                         and svc.telemetry.last_errors["e1"] == 52)
        assert svc.telemetry.latest["e1"][0] == "healthy"
        await dev.publish(T.telemetry("e1"), {**base, "uptime_s": 103, "errors": 80})
        await eventually(lambda: svc.telemetry.latest["e1"][0] == "unhealthy")
