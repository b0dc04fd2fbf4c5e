"""The alerts screen (Pilot): open alerts with their severity, policies with their state;
`t` turns the selected policy off and on, `d` flips dry-run, each audited under the
console's operator; read-only changes nothing."""

from __future__ import annotations

from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from fleet_tui.domain.alerts import AlertSignal
from fleet_tui.registry.registry import Registry
from fleet_tui.service.alerts import apply_signals
from fleet_tui.service.job_control import Actor
from fleet_tui.service.policies import create_policy
from fleet_tui.tui.screens.alerts import AlertsScreen, alert_badge
from tests.tui.workers import workers_done

OPERATOR = Actor("olga", "operator")
CLOCK = 1_700_000_000.0


class _Host(App[None]):
    def __init__(self, registry: Registry, *, read_only: bool = False) -> None:
        super().__init__()
        self.registry = registry
        self.read_only = read_only

    def on_mount(self) -> None:
        self.push_screen(AlertsScreen(self.registry, OPERATOR, read_only=self.read_only,
                                      clock=lambda: CLOCK))


def _seed(registry: Registry) -> None:
    with registry.locked() as conn:
        apply_signals(registry, conn, [
            AlertSignal("offline_spike", "ams-1", "critical", "90 of 225 devices offline",
                        "ams-1"),
            AlertSignal("anomaly", "esp32-000003/temp_c", "warning", "temp_c outlier",
                        "ams-1")], CLOCK, may_resolve=lambda k: True)
    create_policy(registry, {"name": "diag", "when": 'health = "unhealthy"', "for": "10m",
                             "then": "job", "job": {"type": "diagnostic"}}, OPERATOR)
    create_policy(registry, {"name": "halt", "scope": "group", "when": "offline_share > 0.2",
                             "then": "halt_rollouts"}, OPERATOR)


async def _settle(pilot: Pilot[None]) -> None:
    for _ in range(3):
        await workers_done(pilot.app)
        await pilot.pause()


async def test_alerts_and_policies_are_listed_and_a_policy_toggles(registry: Registry) -> None:
    _seed(registry)
    app = _Host(registry)
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot)
        screen = app.screen
        alerts = screen.query_one("#alerts-table", DataTable)
        assert alerts.row_count == 2
        assert {str(alerts.get_row_at(i)[1]) for i in range(2)} == {"offline_spike", "anomaly"}
        title = str(screen.query_one("#alerts-title", Static).render())
        assert "1 critical" in title and "1 warning" in title
        policies = screen.query_one("#policies-table", DataTable)
        assert [str(policies.get_row_at(i)[0]) for i in range(2)] == ["diag", "halt"]
        policies.focus()
        await pilot.press("t")
        await _settle(pilot)
        assert registry.automation.get_policy("diag").enabled is False
        assert str(policies.get_row_at(0)[1]) == "off"
        await pilot.press("down", "d")
        await _settle(pilot)
        assert registry.automation.get_policy("halt").dry_run is True
        await pilot.press("up", "t")
        await _settle(pilot)
        assert registry.automation.get_policy("diag").enabled is True
    changes = [(e.actor, e.target, e.details.get("enabled", e.details.get("dry_run")))
               for e in registry.audit.entries(action="policy.update")]
    assert changes == [("olga", "diag", False), ("olga", "halt", True), ("olga", "diag", True)]


async def test_read_only_console_cannot_toggle_policies(registry: Registry) -> None:
    _seed(registry)
    app = _Host(registry, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        app.screen.query_one("#policies-table", DataTable).focus()
        await pilot.press("t")
        await _settle(pilot)
        assert "read-only" in str(app.screen.query_one("#alerts-status", Static).render())
    assert registry.automation.get_policy("diag").enabled is True
    assert registry.audit.entries(action="policy.update") == []


def test_alert_badge_counts_by_severity() -> None:
    assert str(alert_badge({"critical": 2, "warning": 0, "info": 1})) == "▲ 2 critical · 1 info"
    assert str(alert_badge({"critical": 0, "warning": 0, "info": 0})) == ""
