"""Pilot tests of the console's views and editors on the seeded registry (no broker)."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input, OptionList, Sparkline, Static

from fleet_tui.registry.registry import Registry
from fleet_tui.service.client import ServiceError
from fleet_tui.tui.app import FleetApp
from fleet_tui.tui.screens.alerts import AlertsScreen
from fleet_tui.tui.screens.audit import AuditScreen
from fleet_tui.tui.screens.device import DeviceScreen
from fleet_tui.tui.screens.edit_desired import EditDesiredScreen
from fleet_tui.tui.screens.group_editor import GroupEditorScreen
from fleet_tui.tui.screens.health import HealthScreen
from fleet_tui.tui.screens.jobs import JobCreateScreen, JobsScreen
from fleet_tui.tui.screens.jump import JumpScreen
from fleet_tui.tui.screens.rollouts import RolloutsScreen
from fleet_tui.tui.widgets.device_table import DeviceTable
from fleet_tui.tui.widgets.group_tree import GroupTree
from tests.tui.conftest import (
    CONVERGING_DEVICE,
    GONE_DARK,
    IN_SYNC_DEVICE,
    OLD_FIRMWARE_DEVICE,
    UNHEALTHY,
    AppFactory,
)
from tests.tui.test_console_flows import settle, static_text


class UnreachableService:
    """A shadow writer whose service never answers (what ClientShadowWriter raises then)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def update_desired(self, thing: str, desired: dict[str, Any], name: str,
                       version: int | None) -> dict[str, Any]:
        self.calls.append((thing, desired, name, version))
        raise ServiceError("no answer from the shadow service", None)


async def open_device(pilot: Any, app: FleetApp, device: str) -> DeviceScreen:
    app.open_device(device)
    await settle(pilot)
    assert isinstance(app.screen, DeviceScreen)
    return app.screen


async def test_edit_preview_warns_when_the_firmware_does_not_understand_a_key(
    make_app: AppFactory, registry: Registry
) -> None:
    writer = UnreachableService()
    app = make_app(writer=writer)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert registry.get_device(OLD_FIRMWARE_DEVICE).firmware_version == "2.0.4"
        await open_device(pilot, app, OLD_FIRMWARE_DEVICE)
        await pilot.press("e")
        assert isinstance(app.screen, EditDesiredScreen)
        await pilot.press(*"telemetry_interval_s=20")
        await pilot.pause()
        preview = static_text(app, "#edit-preview")
        assert "2.0.4 does not understand 'telemetry_interval_s'" in preview
        assert '"desired":{"telemetry_interval_s":20}' in preview
        await pilot.press("enter")
        assert app.screen.confirming and "Send 1 change" in static_text(app, "#edit-hint")
        await pilot.press("n")  # back to editing, nothing sent
        assert not app.screen.confirming and writer.calls == []
        await pilot.press("enter", "y")
        await settle(pilot)
        assert isinstance(app.screen, DeviceScreen)
        assert writer.calls == [(OLD_FIRMWARE_DEVICE, {"telemetry_interval_s": 20}, "", None)]
        assert any("no answer" in n.message for n in app._notifications)


async def test_edit_errors_show_their_column_and_cannot_be_sent(make_app: AppFactory) -> None:
    writer = UnreachableService()
    app = make_app(writer=writer)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_device(pilot, app, CONVERGING_DEVICE)
        await pilot.press("e", *"led_is_on=true oops", "enter")
        await pilot.pause()
        assert isinstance(app.screen, EditDesiredScreen)
        assert not app.screen.confirming
        assert "^ col 16: expected key=value" in static_text(app, "#edit-preview")
        await pilot.press("escape")
        assert isinstance(app.screen, DeviceScreen) and writer.calls == []


async def test_read_only_refuses_to_open_the_editor(make_app: AppFactory) -> None:
    app = make_app(read_only=True, writer=UnreachableService())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_device(pilot, app, CONVERGING_DEVICE)
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, DeviceScreen)
        app.query_one(GroupTree)  # main screen still underneath
        tree = app.screen_stack[0].query_one(GroupTree)
        assert tree.check_action("new_group", ()) is False


async def test_history_steps_back_and_forth_through_versions(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = await open_device(pilot, app, CONVERGING_DEVICE)
        converged = {"state": {"desired": {"led_is_on": True}, "reported": {"led_is_on": True}},
                     "version": 8, "timestamp": 1}
        screen.refresh_shadow({"previous": {}, "current": converged})
        await pilot.pause()
        assert screen.view.version == 8 and "led_is_on" in screen.flash
        await pilot.press("left_square_bracket")
        assert screen.view.version == 7 and "history 1/2" in static_text(app, "#shadow-status")
        assert "converging" in static_text(app, "#shadow-status")
        newer = dict(converged, version=9)
        screen.refresh_shadow({"current": newer})  # arrives while travelling: stays put
        await pilot.pause()
        assert screen.view.version == 7 and "history 1/3" in static_text(app, "#shadow-status")
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.position is None and screen.view.version == 9


async def test_named_shadows_are_one_key_away(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = await open_device(pilot, app, CONVERGING_DEVICE)
        assert sorted(screen.histories) == ["", "config"]
        await pilot.press("n")
        assert screen.shadow_name == "config" and screen.view.version == 2
        assert "shadow config" in static_text(app, "#shadow-status")
        assert "sample_rate_hz" in static_text(app, "#shadow-diff")
        await pilot.press("n")
        assert screen.shadow_name == "" and screen.view.version == 7


async def test_query_editor_shows_errors_and_live_counts_then_saves(
    make_app: AppFactory, registry: Registry
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        assert isinstance(app.screen, GroupEditorScreen)
        await pilot.press(*"rev-a-eu", "enter", *"hardware_rev = ")
        await pilot.pause(0.3)
        await settle(pilot)
        preview = static_text(app, "#group-preview")
        assert "^ col 16" in preview
        query = 'hardware_rev = "rev-a" and tag.region ~ "eu-*"'
        app.screen.query_one("#group-query", Input).value = query
        await pilot.pause(0.3)
        await settle(pilot)
        expected = registry.count_devices(where=query)
        assert f"matches {expected} devices" in static_text(app, "#group-preview")
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, GroupEditorScreen)
        assert registry.get_group("rev-a-eu").query == query
        assert app.query_one(DeviceTable).device_query.group == "rev-a-eu"
        assert app.query_one(DeviceTable).total == expected


async def test_query_editor_edits_a_dynamic_groups_query(
    make_app: AppFactory, registry: Registry
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.show_group("canary-ring")
        await settle(pilot)
        await pilot.press("e")
        assert isinstance(app.screen, GroupEditorScreen)
        field = app.screen.query_one("#group-query", Input)
        assert field.value == registry.get_group("canary-ring").query
        field.value = 'tag.deployment_ring = "early"'
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert registry.get_group("canary-ring").query == 'tag.deployment_ring = "early"'


async def test_health_view_shows_sparklines_anomalies_and_gone_dark(
    make_app: AppFactory,
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"health", "enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HealthScreen)
        assert len(screen.query_one("#hspark-temp_c", Sparkline).data or []) == 60
        anomalies = {(a["device_id"], a["metric"]) for a in screen.data.anomalies}
        assert {(d, "temp_c") for d in UNHEALTHY} <= anomalies
        assert [g[0] for g in screen.data.gone_dark] == [GONE_DARK]
        await pilot.press("h")
        await settle(pilot)
        assert len(screen.query_one("#hspark-temp_c", Sparkline).data or []) == 24
        options = screen.query_one(OptionList)
        options.focus()
        gone = next(i for i in range(options.option_count)
                    if options.get_option_at_index(i).id == f"g:{GONE_DARK}")
        options.highlighted = gone
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DeviceScreen) and app.screen.device_id == GONE_DARK


async def test_health_view_counts_open_and_recent_alerts(make_app: AppFactory) -> None:
    from fleet_tui.domain.alerts import AlertSignal
    from fleet_tui.service.alerts import apply_signals

    app = make_app()
    with app.registry.locked() as conn:
        apply_signals(app.registry, conn, [AlertSignal(
            "gone_dark", GONE_DARK, "warning", "silent for 3 intervals")], app.clock(),
            may_resolve=lambda key: True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "1 alerts" in app.sub_title
        await pilot.press("colon", *"health", "enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HealthScreen)
        assert screen.counts["alerts open"] == 1 and screen.counts["recent alerts"] == 1


async def test_keymap_from_the_config_rebinds_keys(make_app: AppFactory) -> None:
    app = make_app(keymap={"app.jump": "ctrl+j", "devices.sort": "o"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        assert not isinstance(app.screen, JumpScreen)
        await pilot.press("ctrl+j")
        assert isinstance(app.screen, JumpScreen)
        await pilot.press("escape", "tab", "o")
        await settle(pilot)
        assert app.query_one(DeviceTable).device_query.order_by == "firmware_version"


async def test_multi_select_hands_the_selection_to_a_bulk_action(make_app: AppFactory) -> None:
    app = make_app()
    requested: list[list[str]] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.query_one(DeviceTable)
        original = app._bulk_requested

        def spy(message: DeviceTable.BulkActionRequested) -> None:
            requested.append(message.device_ids)
            original(message)

        app._bulk_requested = spy  # type: ignore[method-assign]
        await pilot.press("tab", "space", "down", "space", "b")
        await settle(pilot)
        assert table.selected == {"esp32-000001", "esp32-000003"}
        assert isinstance(app.screen, JobCreateScreen)  # the job form takes the selection
        assert app.screen.target is not None and app.screen.target.device_ids == (
            "esp32-000001", "esp32-000003")
        await pilot.press("escape")
        table.set_where('hardware_rev = "rev-a"')  # a filter keeps the selection
        await settle(pilot)
        assert table.selected == {"esp32-000001", "esp32-000003"}
        await pilot.press("x")
        assert table.selected == set() and table.check_action("bulk", ()) is False


async def test_jump_opens_the_rollouts_jobs_and_audit_views(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for view, screen in (("rollouts", RolloutsScreen), ("jobs", JobsScreen),
                             ("audit", AuditScreen)):
            await pilot.press("colon", *view, "enter")
            await settle(pilot)
            assert isinstance(app.screen, screen)
            await pilot.press("escape")
        assert "rollouts 0" in app.sub_title  # the engine's count: none in flight
        await pilot.press("colon", *"alerts", "enter")
        await settle(pilot)
        assert isinstance(app.screen, AlertsScreen)


async def test_empty_registry_shows_empty_views(make_app: AppFactory,
                                                empty_registry: Registry) -> None:
    app = make_app(on=empty_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.query_one(DeviceTable).total == 0
        assert "0 devices" in app.sub_title
        await pilot.press("colon", *"health", "enter")
        await settle(pilot)
        assert isinstance(app.screen, HealthScreen) and app.screen.counts["online"] == 0
        assert "no anomalies" in str(app.screen.query_one(OptionList).get_option_at_index(0)
                                     .prompt)
        _ = Static


async def test_device_table_shows_each_devices_group_and_sync_state_live(
        make_app: AppFactory, registry: Registry) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.query_one(DeviceTable)
        converging, in_sync = table.row_at(0), table.row_at(1)
        assert converging is not None and converging.id == CONVERGING_DEVICE
        assert in_sync is not None and in_sync.id == IN_SYNC_DEVICE
        assert converging.in_sync is False and in_sync.in_sync is True
        assert table.row_at(2) is not None and table.row_at(2).in_sync is None  # type: ignore[union-attr]
        line = registry.get_device(CONVERGING_DEVICE).tags["line"]
        assert converging.groups == (line,)  # the line's dynamic group, not its site folder
        header, first = table.render_line(0).text, table.render_line(1).text
        assert "GROUP" in header and "SYNC" in header
        assert line in first and "Δ" in first and "✓" in table.render_line(2).text
        # The device reports what is desired: the row turns in sync without a reload.
        current = {"state": {"desired": {"led_is_on": True},
                             "reported": {"led_is_on": True}}, "version": 8}
        table.apply_live({}, {}, {(CONVERGING_DEVICE, ""): {"current": current}})
        await pilot.pause()
        assert table.row_at(0).in_sync is True  # type: ignore[union-attr]
        assert "✓" in table.render_line(1).text
        table.apply_live({}, {}, {(CONVERGING_DEVICE, ""): {
            "current": {"exists": False, "version": 8}}})
        assert table.row_at(0).in_sync is None  # type: ignore[union-attr]
