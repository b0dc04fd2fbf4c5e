"""The simulator against a real mosquitto; the test itself plays a minimal shadow service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
import pytest

from fleet_tui.domain.firmware_image import FirmwareImage
from fleet_tui.sample_fleet import devices
from fleet_tui.sim.fleet import Fleet, device_config
from tests.integration.mosquitto import Mosquitto

PREFIX = "$aws/things"
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in desired.items() if reported.get(k) != v}


class MiniService:
    """Just enough of the AWS shadow API to drive a device: get, update, delta."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.shadows: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, Any]] = []
        self.changed = asyncio.Condition()

    def shadow(self, thing: str) -> dict[str, Any]:
        return self.shadows.setdefault(thing, {"desired": {}, "reported": {}, "version": 0})

    async def run(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            payload = orjson.loads(message.payload) if message.payload else None
            self.seen.append((topic, payload))
            parts = topic.split("/")
            if topic.startswith(PREFIX):
                thing, rest = parts[2], "/".join(parts[3:])
                if rest == "shadow/get":
                    await self._get(thing, payload)
                elif rest == "shadow/update":
                    await self._update(thing, payload)
            async with self.changed:
                self.changed.notify_all()

    async def _get(self, thing: str, request: dict[str, Any]) -> None:
        s = self.shadow(thing)
        state: dict[str, Any] = {"desired": s["desired"], "reported": s["reported"]}
        d = _delta(s["desired"], s["reported"])
        if d:
            state["delta"] = d
        await self.client.publish(f"{PREFIX}/{thing}/shadow/get/accepted", orjson.dumps(
            {"state": state, "version": s["version"], "clientToken": request["clientToken"]}),
            qos=1)

    async def _update(self, thing: str, request: dict[str, Any]) -> None:
        s = self.shadow(thing)
        for k, v in request["state"].get("reported", {}).items():
            if v is None:
                s["reported"].pop(k, None)
            else:
                s["reported"][k] = v
        s["version"] += 1
        await self.client.publish(f"{PREFIX}/{thing}/shadow/update/accepted", orjson.dumps(
            {"state": request["state"], "version": s["version"],
             "clientToken": request.get("clientToken")}), qos=1)

    async def set_desired(self, thing: str, desired: dict[str, Any]) -> None:
        s = self.shadow(thing)
        s["desired"].update(desired)
        s["version"] += 1
        d = _delta(s["desired"], s["reported"])
        if d:
            await self.client.publish(f"{PREFIX}/{thing}/shadow/update/delta", orjson.dumps(
                {"state": d, "version": s["version"]}), qos=1)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        async with asyncio.timeout(timeout), self.changed:
            while not (result := predicate()):
                await self.changed.wait()
            return result

    def messages(self, suffix: str, thing: str | None = None) -> list[Any]:
        return [p for t, p in self.seen
                if t.endswith(suffix) and (thing is None or f"/{thing}/" in t)]


@contextlib.asynccontextmanager
async def service(broker: Mosquitto) -> AsyncIterator[MiniService]:
    async with aiomqtt.Client(broker.host, broker.port, identifier="mini-service") as client:
        for topic in (f"{PREFIX}/+/shadow/get", f"{PREFIX}/+/shadow/update",
                      "fleet/+/presence", "fleet/+/telemetry", f"{PREFIX}/+/jobs/#"):
            await client.subscribe(topic, qos=1)
        svc = MiniService(client)
        task = asyncio.create_task(svc.run())
        try:
            yield svc
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def small_fleet(broker: Mosquitto, n: int, **options: Any) -> Fleet:
    options.setdefault("boot_delay_s", 0.05)
    configs = [device_config(row, **options) for row in devices(n, 7)]
    return Fleet(configs, broker.host, broker.port, connect_rate=0)


def presence(svc: MiniService, thing: str) -> list[str]:
    return [p["state"] for p in svc.messages("/presence", thing)]


async def test_first_boot_delta_convergence_and_last_will(mosquitto: Mosquitto) -> None:
    async with service(mosquitto) as svc:
        fleet = small_fleet(mosquitto, 3)
        async with fleet:
            things = list(fleet.devices)
            thing = things[0]
            await svc.wait_for(lambda: all(
                svc.shadow(t)["reported"].get("firmware_version") for t in things))
            await svc.wait_for(lambda: len(svc.messages("/telemetry")) >= 3)
            for t in things:
                assert presence(svc, t)[0] == "online"
                assert svc.messages("/shadow/get", t)
                assert svc.messages("/jobs/start-next", t)
            reported = svc.shadow(thing)["reported"]
            row = next(devices(1, 7))
            assert reported["hardware_rev"] == row["hardware_rev"]
            assert reported["firmware_version"] == row["firmware_version"]
            assert reported["tags"] == {"location": row["reported"]["tags"]["location"]}
            tele = svc.messages("/telemetry", thing)[0]
            assert tele["reset_reason"] == "poweron"

            # desired change converges, an unknown key is reported once
            await svc.set_desired(thing, {"led_is_on": True, "telemetry_interval_s": 1,
                                          "colour": "red"})
            await svc.wait_for(lambda: svc.shadow(thing)["reported"].get("led_is_on") is True)
            rep = svc.shadow(thing)["reported"]
            assert rep["telemetry_interval_s"] == 1
            assert rep["rejected_keys"] == ["colour"]
            assert _delta(svc.shadow(thing)["desired"], rep) == {"colour": "red"}
            updates = len(svc.messages("/shadow/update", thing))
            await svc.wait_for(lambda: len(svc.messages("/telemetry", thing)) >= 3, 10)
            assert len(svc.messages("/shadow/update", thing)) == updates  # no loop

            # the link dies without DISCONNECT: the broker publishes the last will
            sim = fleet[thing]
            assert sim.client is not None
            sim.client.transport.abort()  # type: ignore[union-attr]
            await svc.wait_for(lambda: presence(svc, thing)[-1:] == ["offline"], 10)
            # ...and the device comes back on its own and re-reports
            await svc.wait_for(lambda: presence(svc, thing)[-1:] == ["online"], 10)
            await svc.wait_for(lambda: len(svc.messages("/shadow/get", thing)) == 2)
        # clean power-off: retained offline for everyone
        await svc.wait_for(lambda: all(presence(svc, t)[-1] == "offline" for t in things))


async def _serve_dir(root: Path) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode().lstrip("/")
        file = root / path
        if file.is_file():
            body = file.read_bytes()
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body)
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_ota_update_rollback_and_bad_sha(mosquitto: Mosquitto, tmp_path: Path) -> None:
    releases = {r["version"]: r for r in orjson.loads((SAMPLE / "releases.json").read_bytes())}
    server, port = await _serve_dir(SAMPLE)
    async with server, service(mosquitto) as svc:
        fleet = small_fleet(mosquitto, 12, firmware_base_url=f"http://127.0.0.1:{port}/")
        async with fleet:
            await fleet.wait_connected(timeout=15)
            hw = {t: s.device.cfg.hardware_rev for t, s in fleet.devices.items()}
            good = next(t for t, h in hw.items() if h != "rev-b")
            crashy = next(t for t, h in hw.items() if h == "rev-b")
            bad = next(t for t in hw if t not in (good, crashy))
            await svc.wait_for(lambda: all(
                svc.shadow(t)["reported"].get("firmware_version") for t in hw))
            old_bad = svc.shadow(bad)["reported"]["firmware_version"]

            def trio(version: str, sha: str | None = None) -> dict[str, Any]:
                r = releases[version]
                return {"target_version": version, "ota_url": r["url"],
                        "ota_sha256": sha or r["sha256"]}

            await svc.set_desired(good, trio("2.4.1"))
            await svc.set_desired(crashy, trio("2.4.0"))  # crash_on_hw rev-b
            await svc.set_desired(bad, trio("2.4.1", "0" * 64))

            await svc.wait_for(lambda: svc.shadow(good)["reported"].get("firmware_version")
                               == "2.4.1", 20)
            rep = svc.shadow(good)["reported"]
            assert (rep["ota_status"], rep["target_version"], rep["ota_url"]) == (
                "idle", "2.4.1", releases["2.4.1"]["url"])
            assert "offline" in presence(svc, good)  # the reboot dropped the link
            statuses = [p["state"]["reported"].get("ota_status")
                        for p in svc.messages("/shadow/update", good)]
            assert statuses.count("downloading") == 1 and "applying" in statuses
            await svc.wait_for(lambda: not fleet[good].device.flash.pending)  # confirmed

            await svc.wait_for(lambda: svc.shadow(crashy)["reported"].get("ota_error")
                               == "rolled back: crash loop on boot", 20)
            assert svc.shadow(crashy)["reported"]["firmware_version"] != "2.4.0"
            await svc.wait_for(lambda: svc.messages("/telemetry", crashy)[-1]["reset_reason"]
                               == "ota_rollback")

            await svc.wait_for(lambda: svc.shadow(bad)["reported"].get("ota_status")
                               == "failed")
            rep = svc.shadow(bad)["reported"]
            assert rep["ota_error"] == "sha256 mismatch"
            assert rep["firmware_version"] == old_bad


async def test_jobs_reboot_and_diagnostic(mosquitto: Mosquitto) -> None:
    async with service(mosquitto) as svc:
        fleet = small_fleet(mosquitto, 1)
        async with fleet:
            (thing,) = fleet.devices
            await svc.wait_for(lambda: svc.messages("/jobs/start-next", thing))
            base = f"{PREFIX}/{thing}/jobs"

            async def offer(job_id: str, document: dict[str, Any]) -> None:
                await svc.client.publish(f"{base}/start-next/accepted", orjson.dumps(
                    {"execution": {"jobId": job_id, "status": "QUEUED", "versionNumber": 1,
                                   "jobDocument": document}}), qos=1)

            await offer("diag-1", {"operation": "diagnostic"})
            (upd,) = await svc.wait_for(lambda: svc.messages("/jobs/diag-1/update", thing))
            assert upd["status"] == "SUCCEEDED" and "heap_free" in upd["statusDetails"]
            await svc.client.publish(f"{base}/diag-1/update/accepted", b"{}", qos=1)
            await svc.wait_for(lambda: len(svc.messages("/jobs/start-next", thing)) == 2)

            await offer("reboot-1", {"operation": "reboot"})
            (upd,) = await svc.wait_for(lambda: svc.messages("/jobs/reboot-1/update", thing))
            assert upd == {"status": "SUCCEEDED", "statusDetails": {"reset_reason": "sw_reboot"},
                           "clientToken": upd["clientToken"]}
            assert presence(svc, thing) == ["online", "offline", "online"]


async def test_broker_restart_devices_reconnect_and_rereport(mosquitto: Mosquitto) -> None:
    fleet = small_fleet(mosquitto, 3)
    async with fleet:
        assert await fleet.wait_connected(timeout=10)
        before = fleet.stats["connects"]
        await asyncio.to_thread(mosquitto.restart)
        assert await fleet.wait_connected(timeout=20)
        async with service(mosquitto) as svc:
            # the broker lost its retained messages with its memory: the devices' online
            # presence is there again because they re-published it on reconnect
            await svc.wait_for(lambda: {t.split("/")[1] for t, p in svc.seen
                                        if t.endswith("/presence") and p["state"] == "online"}
                               == set(fleet.devices), 10)
        assert fleet.stats["connects"] >= before + 3
        assert all(s.device.connections == 2 for s in fleet.devices.values())
        assert fleet.connected == 3


def test_cli_sim_runs_and_stops_on_sigterm(mosquitto: Mosquitto) -> None:
    # `fleet-tui sim`, also before fleet_tui.cli registers the sub-command itself
    code = ("import sys; from fleet_tui import cli; from fleet_tui.sim.cli import register\n"
            "try:\n    cli.build_parser().parse_args(['sim'])\n"
            "except SystemExit:\n    cli.EXTRA_COMMANDS.append(register)\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "sim", "--devices", "5", "--broker", mosquitto.url,
         "--profile", "flaky:0.5", "--profile", "bad-sensor:0.5", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        online: set[str] = set()
        got: list[tuple[str, bytes]] = []
        sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cli-watch")
        sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        sub.connect(mosquitto.host, mosquitto.port)
        sub.subscribe("fleet/+/presence", qos=1)
        sub.loop_start()
        while time.monotonic() < deadline and len(online) < 5:
            online = {t for t, p in got if b'"online"' in p}
            time.sleep(0.05)
        assert len(online) == 5
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "sim: 5 devices" in out and "powering off" in out
        time.sleep(0.3)
        sub.loop_stop()
        last = {}
        for t, p in got:
            last[t] = p
        assert all(p == b'{"state":"offline"}' for p in last.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _small_images_exist() -> None:
    for version in ("2.4.0", "2.4.1"):
        image = SAMPLE / "firmware" / f"fleet-fw-{version}.bin"
        assert image.is_file()
        assert FirmwareImage.from_bytes(image.read_bytes()).version == version
