"""The console against the real thing: a mosquitto started by the test, the real
FleetService (in the console's process, or attached to from outside) and simulated devices
speaking the firmware's protocol; the registry on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from fleet_tui.config import Settings
from fleet_tui.registry.registry import Registry
from fleet_tui.sample_fleet import devices
from fleet_tui.service.fleet_service import FleetService
from fleet_tui.service.remote import RemoteService
from fleet_tui.sim.fleet import Fleet, device_config
from fleet_tui.tui.app import FleetApp
from fleet_tui.tui.screens.device import DeviceScreen
from fleet_tui.tui.screens.edit_desired import EditDesiredScreen
from fleet_tui.tui.widgets.device_table import DeviceTable
from fleet_tui.tui.widgets.group_tree import GroupTree
from tests.integration.conftest import mosquitto  # noqa: F401 (the fixture)
from tests.integration.mosquitto import Mosquitto
from tests.tui.conftest import CONVERGING_DEVICE
from tests.tui.test_console_flows import settle, static_text


@pytest.fixture
def registry(seeded_registry: Registry) -> Registry:
    """The seeded console registry, on SQLite and on PostgreSQL."""
    return seeded_registry


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def simulated(broker: Mosquitto, settings: Settings, n: int) -> AsyncIterator[Fleet]:
    configs = [device_config(row, shadow_prefix=settings.shadow_prefix,
                             fleet_prefix=settings.fleet_prefix, telemetry_interval_s=5,
                             boot_delay_s=0.05) for row in devices(n, 7)]
    fleet = Fleet(configs, broker.host, broker.port, connect_rate=0)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def test_tree_to_device_to_edit_desired_then_the_simulator_converges(
    mosquitto: Mosquitto, registry: Registry  # noqa: F811
) -> None:
    settings = Settings(db="sqlite://", broker=mosquitto.url)
    service = FleetService(settings, registry)
    app = FleetApp(settings, registry, service)
    app.animation_level = "none"
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await until(lambda: service.session.connected.is_set(), 10, "the service")
        async with simulated(mosquitto, settings, 3) as fleet:
            assert await fleet.wait_connected(timeout=15)
            # The tree: apac is the first folder; the device table follows the selection.
            tree = app.query_one(GroupTree)
            await pilot.press("down", "enter")
            await settle(pilot)
            assert tree.cursor_node is not None and tree.cursor_node.data is not None
            group = tree.cursor_node.data.name
            app.show_group(None)  # back to the whole fleet: the simulated devices come first
            await settle(pilot)
            assert group == "apac"
            await pilot.press("tab", "enter")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, DeviceScreen) and screen.device_id == CONVERGING_DEVICE
            # The seeded desired led_is_on=true reaches the device, which reports it. (Its
            # own interval, 5 s, differs from the stale desired 30: AWS sends no delta for
            # a desired value that did not change, so that stays "converging".)
            await until(lambda: screen.view.document is not None
                        and screen.view.document.reported.get("led_is_on") is True
                        and screen.view.document.reported.get("telemetry_interval_s") == 5,
                        20, "the device's first report")
            assert "converging" in static_text(app, "#shadow-status")
            await pilot.press("e", *"telemetry_interval_s=7", "enter")
            editor = app.screen
            assert isinstance(editor, EditDesiredScreen) and editor.confirming
            assert '"desired":{"telemetry_interval_s":7}' in static_text(app, "#edit-preview")
            sent_at = screen.view.version or 0
            await pilot.press("y")
            await until(lambda: (screen.view.document is not None
                                 and screen.view.document.reported.get("telemetry_interval_s")
                                 == 7 and screen.view.document.in_sync), 20, "convergence")
            assert "in sync" in static_text(app, "#shadow-status")
            # On the way there the console showed the delta ("converging…").
            between = [v.document for v in screen.histories[""].views
                       if v.version is not None and v.version > sent_at]
            assert any(d is not None and d.delta() == {"telemetry_interval_s": 7}
                       for d in between)
            assert any("accepted as version" in n.message for n in app._notifications)
    assert registry.get_shadow(CONVERGING_DEVICE)["state"]["reported"][
        "telemetry_interval_s"] == 7


@contextlib.asynccontextmanager
async def served(settings: Settings, registry: Registry) -> AsyncIterator[FleetService]:
    """`fleet-tui serve` in all but the process: the service on this loop."""
    service = FleetService(settings, registry, client_id="served-elsewhere")
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.session.connected.wait(), 10)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_attached_console_follows_a_service_running_elsewhere(
    mosquitto: Mosquitto, registry: Registry  # noqa: F811
) -> None:
    settings = Settings(db="sqlite://", broker=mosquitto.url)
    async with served(settings, registry):
        remote = RemoteService(settings)
        app = FleetApp(settings, registry, remote)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await until(remote.connected.is_set, 10, "the attached event stream")
            screen = DeviceScreen(registry, CONVERGING_DEVICE, writer=app.writer)
            await app.push_screen(screen)
            await settle(pilot)
            assert screen.view.version == 7
            await pilot.press("e", *"telemetry_interval_s=45", "enter", "y")
            # No device answers: the shadow stays converging on the new desired value.
            await until(lambda: screen.view.version == 8, 10, "the live document")
            doc = screen.view.document
            assert doc is not None and doc.delta()["telemetry_interval_s"] == 45
            assert "converging" in static_text(app, "#shadow-status")
            table = app.screen_stack[0].query_one(DeviceTable)
            assert table.total == registry.count_devices()
