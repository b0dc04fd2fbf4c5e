"""Pilot tests of the console's flows on a seeded SQLite registry (no broker, no service)."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static

from fleet_tui.cli import build_parser
from fleet_tui.domain.query import QuerySyntaxError
from fleet_tui.registry.registry import Registry
from fleet_tui.service.events import EventBus, PresenceChanged, ShadowChanged
from fleet_tui.tui.app import FleetApp
from fleet_tui.tui.screens.device import DeviceScreen
from fleet_tui.tui.screens.health import HealthScreen
from fleet_tui.tui.screens.help import HelpScreen
from fleet_tui.tui.widgets.device_table import DeviceTable
from fleet_tui.tui.widgets.filter_bar import FilterBar
from fleet_tui.tui.widgets.group_tree import GroupTree
from tests.tui.conftest import CONVERGING_DEVICE, IN_SYNC_DEVICE, ONLINE, UNHEALTHY, AppFactory
from tests.tui.workers import workers_done


async def settle(pilot: Pilot[None]) -> None:
    """Let workers finish and their messages be handled (workers may start workers)."""
    for _ in range(4):
        await workers_done(pilot.app)
        await pilot.pause()


def static_text(app: FleetApp, selector: str) -> str:
    """What a Static on the top screen shows, as plain text (Rich renderables included)."""
    content = app.screen.query_one(selector, Static).content
    if isinstance(content, str):
        return content
    console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    console.print(content)
    return console.export_text()


async def test_selecting_a_group_in_the_tree_shows_its_devices(
    make_app: AppFactory, registry: Registry
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tree = app.query_one(GroupTree)
        table = app.query_one(DeviceTable)
        assert table.total == registry.count_devices()
        # root, then apac (folder), then canary-ring (dynamic)
        await pilot.press("down", "down", "enter")
        await settle(pilot)
        assert tree.cursor_node is not None and tree.cursor_node.data is not None
        assert tree.cursor_node.data.name == "canary-ring"
        assert table.device_query.group == "canary-ring"
        assert table.total == registry.count_devices(group="canary-ring")
        expected = [r.id for r in registry.list_devices(group="canary-ring", limit=5)]
        assert [table.row_at(i).id for i in range(5)] == expected  # type: ignore[union-attr]
        assert "canary-ring · 21 devices" in static_text(app, "#table-title")


async def test_folders_expand_lazily_with_member_counts(
    make_app: AppFactory, registry: Registry
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tree = app.query_one(GroupTree)
        apac = next(n for n in tree.root.children if n.data and n.data.name == "apac")
        assert len(apac.children) == 0  # not built until expanded
        assert f"▸ apac ({registry.count_devices(group='apac')})" in str(apac.label)
        apac.expand()
        await settle(pilot)
        names = [c.data.name for c in apac.children if c.data]
        assert names == sorted(c.name for c in registry.get_group("apac").children)
        first = apac.children[0]
        assert f"({registry.count_devices(group=names[0])})" in str(first.label)


async def test_bad_filter_shows_the_error_at_its_column_and_keeps_the_list(
    make_app: AppFactory, registry: Registry
) -> None:
    query = "firmware_version xx"
    with pytest.raises(QuerySyntaxError) as expected:
        registry.parse_query(query)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("tab", "slash")
        assert isinstance(app.focused, Input)
        app.query_one("#filter-input", Input).value = query
        await pilot.press("enter")
        await settle(pilot)
        bar = app.query_one(FilterBar)
        assert bar.has_class("-error")
        error = static_text(app, "#filter-error")
        assert f"col {expected.value.col}: {expected.value.message}" in error
        caret_line = error.splitlines()[1]
        assert caret_line.index("^") == len("/ ") + expected.value.col - 1
        table = app.query_one(DeviceTable)
        assert table.total == registry.count_devices()  # nothing lost
        await pilot.press("escape")
        assert not bar.has_class("-open")


async def test_good_filter_narrows_the_selected_group(
    make_app: AppFactory, registry: Registry
) -> None:
    where = 'hardware_rev = "rev-a"'
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.show_group("apac")
        await settle(pilot)
        await pilot.press("tab", "slash")
        app.query_one("#filter-input", Input).value = where
        await pilot.press("enter")
        await settle(pilot)
        table = app.query_one(DeviceTable)
        assert table.device_query.group == "apac"
        assert table.total == registry.count_devices(group="apac", where=where)
        assert 0 < (table.total or 0) < registry.count_devices(group="apac")
        assert where in static_text(app, "#table-title")


async def test_opening_a_device_shows_its_shadow_diff(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("tab", "enter")  # the first device is the converging one
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DeviceScreen)
        assert screen.device_id == CONVERGING_DEVICE
        doc = screen.view.document
        assert doc is not None and doc.version == 7
        assert doc.delta() == {"led_is_on": True}
        status = str(screen.query_one("#shadow-status", Static).render())
        assert "converging" in status and "version 7" in status
        await pilot.press("escape")
        assert not isinstance(app.screen, DeviceScreen)


async def test_live_documents_turn_the_device_in_sync(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_device(CONVERGING_DEVICE)
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DeviceScreen)
        converged = {"state": {"desired": {"led_is_on": True},
                               "reported": {"led_is_on": True}}, "version": 8, "timestamp": 1}
        screen.refresh_shadow({"previous": {}, "current": converged})
        await pilot.pause()
        status = str(screen.query_one("#shadow-status", Static).render())
        assert "in sync" in status and "version 8" in status


@pytest.mark.parametrize("read_only", [False, True])
async def test_read_only_hides_edit_desired(make_app: AppFactory, read_only: bool) -> None:
    app = make_app(read_only=read_only)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.open_device(IN_SYNC_DEVICE)
        await settle(pilot)
        actions = {b.binding.action for b in app.screen.active_bindings.values()}
        assert ("edit_desired" in actions) is not read_only
        await pilot.press("e")  # refused silently in read-only mode, no crash either way
        assert ("read-only" in app.sub_title) is read_only


async def test_help_describes_the_focused_widget(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("tab", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.help_title == "DeviceTable"
        assert ("s", "Sort") in app.screen.keys
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_colon_jumps_to_the_health_view(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon", "h", "e", "enter")
        await settle(pilot)
        assert isinstance(app.screen, HealthScreen)
        assert app.screen.counts["online"] == len(ONLINE) + 1  # and the gone-dark one
        assert app.screen.counts["gone dark"] == 1
        assert app.screen.counts["unhealthy"] == len(UNHEALTHY)
        await pilot.press("escape")
        assert not isinstance(app.screen, HealthScreen)


async def test_palette_group_command_selects_the_group(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"group: lab-bench")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.query_one(DeviceTable).device_query.group == "lab-bench"
        assert app.query_one(DeviceTable).total == 8


class FakeService:
    """Stands in for FleetService: an event bus and a run() that waits to be stopped."""

    def __init__(self) -> None:
        self.events = EventBus()
        self.stopped = False

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopped = True


async def test_service_events_reach_the_ui_in_batches(make_app: AppFactory) -> None:
    service = FakeService()
    app = make_app(service=service)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_device(CONVERGING_DEVICE)
        await settle(pilot)
        service.events.emit(PresenceChanged("esp32-000050", True, "connect", 0.0))
        service.events.emit(ShadowChanged(CONVERGING_DEVICE, "", {"current": {
            "state": {"desired": {"led_is_on": True}, "reported": {"led_is_on": True}},
            "version": 10, "timestamp": 2}}))
        await pilot.pause(0.6)  # one ~250 ms flush
        screen = app.screen
        assert isinstance(screen, DeviceScreen)
        assert screen.view.document is not None and screen.view.document.version == 10
        app.pop_screen()
        await settle(pilot)
        row = app.query_one(DeviceTable).row_at(49)
        assert row is not None and row.id == "esp32-000050" and row.online
    assert service.stopped


def test_console_command_is_registered() -> None:
    args = build_parser().parse_args(["console", "--read-only", "--no-service"])
    assert args.read_only and args.no_service
    assert args.handler.__name__ == "cmd_console"
