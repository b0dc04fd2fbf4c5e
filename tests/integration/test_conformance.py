"""One conformance suite for both device implementations (the firmware's host binary and
the simulator) against the real service (its registry on SQLite and on PostgreSQL) and a
real mosquitto, plus the shadow retry contract against a test client playing the service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fleet_tui.domain.firmware_image import FirmwareImage
from fleet_tui.registry.registry import Registry
from fleet_tui.service.client import ShadowClient
from fleet_tui.service.fleet_service import FleetService
from fleet_tui.service.topics import Topics
from tests.integration.devices import IMPLEMENTATIONS, DeviceProcess, file_server
from tests.integration.mosquitto import Mosquitto
from tests.integration.service_harness import peer, running_service, settings_for

T = Topics()
pytestmark = pytest.mark.slow


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


class Rig:
    def __init__(self, service: FleetService, device: DeviceProcess, broker: Mosquitto,
                 images: str) -> None:
        self.service, self.device, self.broker, self.images = service, device, broker, images
        self.client = ShadowClient(service.settings, timeout=5)

    @property
    def reported(self) -> dict[str, Any]:
        doc = self.service.shadows.document(self.device.thing)
        return dict(doc.reported) if doc is not None else {}

    async def set_desired(self, **desired: Any) -> None:
        await self.client.update_desired(self.device.thing, desired)

    async def wait_reported(self, timeout: float = 20.0, **expected: Any) -> dict[str, Any]:
        def ok() -> bool:
            rep = self.reported
            return all(rep.get(k) == v for k, v in expected.items())
        try:
            await until(ok, timeout, f"reported {expected}")
        except AssertionError:
            raise AssertionError(
                f"reported {self.reported} never matched {expected}\n{self.device.output()}"
            ) from None
        return self.reported


@pytest.fixture
def images(tmp_path: Path) -> Path:
    out = tmp_path / "images"
    out.mkdir()
    for image in (FirmwareImage.build("2.4.1"), FirmwareImage.build("2.4.0", crash_on_hw="rev-b"),
                  FirmwareImage.build("2.4.2")):
        (out / f"fleet-fw-{image.version}.bin").write_bytes(image.to_bytes())
    (out / "not-an-image.bin").write_bytes(b"hello" * 100)
    return out


@pytest.fixture(params=IMPLEMENTATIONS)
async def rig(request: pytest.FixtureRequest, mosquitto: Mosquitto, tmp_path: Path,
              images: Path, db_url: str) -> AsyncIterator[Rig]:
    registry = Registry.open(db_url)
    settings = settings_for(mosquitto.url, "unused")
    # A test that plays the jobs service itself turns the real engine off: both would
    # answer the device's start-next, and the device takes the first answer.
    settings.jobs.engine = request.node.get_closest_marker("own_jobs_service") is None
    with file_server(images) as base:
        async with running_service(settings, registry) as service:
            device = DeviceProcess(request.param, f"{request.param}-dev-1", mosquitto.url,
                                   tmp_path).start()
            try:
                rig = Rig(service, device, mosquitto, base)
                await rig.wait_reported(firmware_version="2.2.0", hardware_rev="rev-b")
                yield rig
            finally:
                device.stop()
    registry.close()


def ota(rig: Rig, version: str, *, sha: str | None = None, file: str | None = None) -> dict:
    image = FirmwareImage.build(version, crash_on_hw="rev-b" if version == "2.4.0" else "")
    return {"target_version": version,
            "ota_url": f"{rig.images}/{file or f'fleet-fw-{version}.bin'}",
            "ota_sha256": sha or image.sha256}


async def test_first_boot_registers_state(rig: Rig) -> None:
    rep = rig.reported
    assert rep["firmware_version"] == "2.2.0" and rep["hardware_rev"] == "rev-b"
    assert rep["tags"]["location"] == "lab"
    assert rep["ota_status"] == "idle"
    assert isinstance(rep["led_is_on"], bool) and isinstance(rep["telemetry_interval_s"], int)
    await until(lambda: rig.service.presence.online.get(rig.device.thing), 10, "online")
    await until(lambda: rig.device.thing in rig.service.telemetry.latest, 10, "telemetry")
    record = rig.service.telemetry.latest[rig.device.thing][1]
    assert {"uptime_s", "heap_free", "rssi", "cpu_pct", "temp_c", "reset_reason",
            "errors"} <= set(record)


async def test_desired_change_converges_and_the_delta_empties(rig: Rig) -> None:
    await rig.set_desired(led_is_on=True, telemetry_interval_s=3)
    await rig.wait_reported(led_is_on=True, telemetry_interval_s=3)
    doc = rig.service.shadows.document(rig.device.thing)
    assert doc is not None and doc.in_sync


async def test_unknown_key_is_reported_not_looped_on(rig: Rig) -> None:
    await rig.set_desired(flux_capacitor=88)
    rep = await until(lambda: "flux_capacitor" in (rig.reported.get("rejected_keys") or [])
                      and rig.reported, 15, "rejected_keys")
    assert "flux_capacitor" not in rep
    version = rig.service.shadows.document(rig.device.thing).version  # type: ignore[union-attr]
    await asyncio.sleep(3)
    later = rig.service.shadows.document(rig.device.thing).version  # type: ignore[union-attr]
    assert later - version <= 2, "the device keeps re-reporting an unknown key"


async def test_ota_good_image_updates_and_is_confirmed(rig: Rig) -> None:
    await rig.set_desired(**ota(rig, "2.4.1"))
    rep = await rig.wait_reported(40, firmware_version="2.4.1", ota_status="idle")
    assert rep["target_version"] == "2.4.1" and not rep.get("ota_error")
    doc = rig.service.shadows.document(rig.device.thing)
    assert doc is not None and doc.in_sync
    # Confirmed: it stays on 2.4.1 past the confirm timeout.
    await asyncio.sleep(rig.device.confirm_timeout + 2)
    assert rig.reported["firmware_version"] == "2.4.1"


async def test_ota_wrong_sha256_is_refused_and_the_old_version_kept(rig: Rig) -> None:
    await rig.set_desired(**ota(rig, "2.4.2", sha="0" * 64))
    rep = await rig.wait_reported(30, ota_status="failed")
    assert "sha256" in rep["ota_error"] and rep["firmware_version"] == "2.2.0"


async def test_ota_image_that_crash_loops_is_rolled_back_and_reported(rig: Rig) -> None:
    await rig.set_desired(**ota(rig, "2.4.0"))
    rep = await rig.wait_reported(90, ota_status="failed", firmware_version="2.2.0")
    assert "rolled back" in rep["ota_error"]


@pytest.mark.own_jobs_service
async def test_jobs_reboot_and_diagnostic(rig: Rig) -> None:
    thing = rig.device.thing
    async with peer(rig.broker.url, [T.jobs(thing, "start-next"), T.jobs(thing, "+", "update")],
                    client_id="jobs-service") as jobs:
        # Restart the device so that its connect-time start-next reaches this jobs service.
        rig.device.stop()
        rig.device.start()
        queue = [("diag-1", {"operation": "diagnostic"}), ("reboot-1", {"operation": "reboot"})]
        for job_id, document in queue:
            _, start = await jobs.wait_for(lambda t, p: t.endswith("/jobs/start-next"), 30)
            await jobs.publish(T.jobs(thing, "start-next", "accepted"), {
                "clientToken": start.get("clientToken"), "timestamp": int(time.time()),
                "execution": {"jobId": job_id, "status": "IN_PROGRESS", "versionNumber": 2,
                              "executionNumber": 1, "jobDocument": document}})
            _, update = await jobs.wait_for(
                lambda t, p, j=job_id: t.endswith(f"/jobs/{j}/update")
                and p.get("status") == "SUCCEEDED", 30)
            jobs.inbox.clear()
            await jobs.publish(T.jobs(thing, job_id, "update", "accepted"),
                               {"clientToken": update.get("clientToken"),
                                "timestamp": int(time.time())})
            if job_id == "diag-1":
                details = update["statusDetails"]
                assert {"heap_free", "uptime_s", "firmware_version"} <= set(details)
                assert all(isinstance(v, str) for v in details.values())
            else:
                assert update["statusDetails"]["reset_reason"] == "sw_reboot"


async def test_kill_9_sends_the_last_will(rig: Rig) -> None:
    thing = rig.device.thing
    await until(lambda: rig.service.presence.online.get(thing), 10, "online")
    rig.device.kill9()
    await until(lambda: rig.service.presence.online.get(thing) is False, 20, "offline")


async def test_broker_restart_device_reconnects_and_re_reports(rig: Rig) -> None:
    thing = rig.device.thing
    before = rig.service.shadows.document(thing).version  # type: ignore[union-attr]
    rig.broker.restart(down_for=1.0)
    await until(lambda: rig.service.session.connections >= 2, 30, "service reconnect")
    await until(lambda: rig.service.shadows.document(thing).version > before, 60,  # type: ignore[union-attr]
                "device re-report")
    await until(lambda: rig.service.presence.online.get(thing), 30, "online again")


# ------------------------------------------------------------------ retry contract

RETRY_S = 2  # the devices' --shadow-retry-timeout here; attempt n waits RETRY_S * 2^(n-1)


class RetryingDevice(DeviceProcess):
    def command(self) -> list[str]:
        return [*super().command(), "--shadow-retry-timeout", str(RETRY_S)]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_unanswered_or_500_update_is_resent_with_the_same_token_and_state(
        impl: str, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """No service: the test answers the device's shadow updates itself, or withholds."""
    thing = f"{impl}-retry-1"
    update = T.shadow(thing)
    async with peer(mosquitto.url, [update], client_id="fake-service") as svc:
        device = RetryingDevice(impl, thing, mosquitto.url, tmp_path).start()
        try:
            def updates() -> list[dict[str, Any]]:
                return svc.received("/shadow/update")

            async def nth_update(n: int, timeout: float = 30.0) -> dict[str, Any]:
                await until(lambda: len(updates()) >= n, timeout,
                            f"shadow update #{n}\n{device.output()}")
                return updates()[n - 1]

            async def answer(kind: str, body: dict[str, Any]) -> None:
                await svc.publish(T.shadow(thing, "", "update", kind), body)

            # The boot report, unanswered: sent again with the same token and state.
            boot = await nth_update(1)
            token = boot["clientToken"]
            assert boot["state"]["reported"]["firmware_version"] == "2.2.0"
            assert await nth_update(2) == boot
            # Answered 500: sent again (after the backoff), still the same update.
            await answer("rejected", {"code": 500, "message": "internal error",
                                      "clientToken": token})
            assert await nth_update(3) == boot
            # Accepted: that update is done; the device's next report is a new one.
            await answer("accepted", {"state": {"reported": boot["state"]["reported"]},
                                      "version": 1, "clientToken": token,
                                      "timestamp": int(time.time())})
            await svc.publish(T.shadow(thing, "", "update", "delta"),
                              {"state": {"led_is_on": True}, "version": 2})
            led = await nth_update(4)
            assert led["state"]["reported"]["led_is_on"] is True
            assert led["clientToken"] != token
            await answer("accepted", {"state": {"reported": {"led_is_on": True}},
                                      "version": 2, "clientToken": led["clientToken"]})
            # Refused 409: final, never sent again.
            await svc.publish(T.shadow(thing, "", "update", "delta"),
                              {"state": {"led_is_on": False}, "version": 3})
            off = await nth_update(5)
            assert off["state"]["reported"]["led_is_on"] is False
            await answer("rejected", {"code": 409, "message": "Version conflict",
                                      "clientToken": off["clientToken"]})
            # Longer than the next retry wait of any of them: nothing more is sent.
            await asyncio.sleep(RETRY_S * 2 + 1)
            tokens = [u["clientToken"] for u in updates()]
            assert tokens == [token, token, token, led["clientToken"], off["clientToken"]], \
                device.output()
        finally:
            device.stop()
