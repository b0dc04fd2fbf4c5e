"""`:alerts`: open alerts (severity, kind, group, repeats, message) and the policies, with
a key to turn the selected policy on or off and one to flip its dry-run mode.

Self-contained: it reads and writes through the service layer (``service/alerts.py``,
``service/policies.py``) in workers, and posts the results back as messages.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry
from fleet_tui.service.alerts import list_alerts, open_alert_summary
from fleet_tui.service.job_control import Actor
from fleet_tui.service.policies import list_policies, set_policy

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def alert_badge(summary: dict[str, int]) -> Text:
    """The header's alert count, e.g. ``▲ 2 critical · 3 warning`` (empty when none)."""
    text = Text()
    parts = [(s, n) for s, n in summary.items() if n]
    for i, (severity, n) in enumerate(parts):
        if i:
            text.append(" · ")
        text.append(f"{n} {severity}", style=SEVERITY_STYLE.get(severity, ""))
    if parts:
        text = Text("▲ ", style="bold") + text
    return text


class AlertsScreen(Screen[None]):
    HELP = ("Open alerts, newest first, and the policies. On the policies table: "
            "t turns the policy on or off, d flips dry-run. r reloads, Esc goes back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="alerts.back"),
        Binding("r", "reload", "Reload", id="alerts.reload"),
        Binding("t", "toggle_policy", "Policy on/off", id="alerts.toggle_policy"),
        Binding("d", "toggle_dry_run", "Dry-run", id="alerts.toggle_dry_run"),
    ]

    class Loaded(Message):
        def __init__(self, alerts: list[Any], policies: list[Any], summary: dict[str, int],
                     error: str | None = None) -> None:
            super().__init__()
            self.alerts, self.policies, self.summary, self.error = (alerts, policies,
                                                                    summary, error)

    def __init__(self, registry: Registry, actor: Actor, *, read_only: bool = False,
                 clock: Any = time.time) -> None:
        super().__init__()
        self.registry = registry
        self.actor = actor
        self.read_only = read_only
        self.clock = clock
        self.policy_names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("alerts", style="bold"), id="alerts-title")
        yield DataTable(id="alerts-table", cursor_type="row", zebra_stripes=True)
        yield Static(Text("policies", style="bold"), id="policies-title")
        yield DataTable(id="policies-table", cursor_type="row")
        yield Static("", id="alerts-status")
        yield Footer()

    def on_mount(self) -> None:
        alerts = self.query_one("#alerts-table", DataTable)
        alerts.add_columns("severity", "kind", "group", "x", "last seen", "message")
        policies = self.query_one("#policies-table", DataTable)
        policies.add_columns("policy", "state", "when", "then", "this hour")
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="alerts-load")
    def _load(self) -> None:
        try:
            self.post_message(self.Loaded(list_alerts(self.registry, status="open"),
                                          list_policies(self.registry),
                                          open_alert_summary(self.registry)))
        except RegistryError as err:
            self.post_message(self.Loaded([], [], {}, str(err)))

    def on_alerts_screen_loaded(self, message: Loaded) -> None:
        status = self.query_one("#alerts-status", Static)
        if message.error:
            status.update(Text(message.error, style="bold red"))
            return
        self.query_one("#alerts-title", Static).update(
            Text("alerts  ", style="bold") + alert_badge(message.summary))
        alerts = self.query_one("#alerts-table", DataTable)
        alerts.clear()
        for a in message.alerts:
            alerts.add_row(Text(a.severity, style=SEVERITY_STYLE.get(a.severity, "")),
                           a.kind, a.group_name or "-", str(a.count),
                           time.strftime("%H:%M:%S", time.gmtime(a.last_seen)), a.message,
                           key=str(a.id))
        policies = self.query_one("#policies-table", DataTable)
        row = policies.cursor_row
        policies.clear()
        now = self.clock()
        self.policy_names = [p.name for p in message.policies]
        for p in message.policies:
            state = ("on" if p.enabled else "off") + (" · dry-run" if p.dry_run else "")
            fired = sum(1 for t in p.fired_at if now - t < 3600)
            policies.add_row(p.name, Text(state, style="green" if p.enabled else "dim"),
                             p.definition.get("when", ""), p.definition.get("then", ""),
                             f"{fired}/{p.definition.get('max_per_hour', '-')}", key=p.name)
        if self.policy_names:
            policies.move_cursor(row=min(row, len(self.policy_names) - 1))

    def _selected_policy(self) -> str | None:
        table = self.query_one("#policies-table", DataTable)
        if not self.policy_names or table.cursor_row < 0:
            return None
        return self.policy_names[min(table.cursor_row, len(self.policy_names) - 1)]

    def action_toggle_policy(self) -> None:
        self._change(enabled=True)

    def action_toggle_dry_run(self) -> None:
        self._change(enabled=False)

    def _change(self, *, enabled: bool) -> None:
        name = self._selected_policy()
        status = self.query_one("#alerts-status", Static)
        if self.read_only:
            status.update(Text("read-only: policies cannot be changed", style="yellow"))
            return
        if name is None:
            status.update("no policy selected")
            return
        self._apply(name, enabled)

    @work(thread=True, exclusive=True, group="alerts-change")
    def _apply(self, name: str, flip_enabled: bool) -> None:
        try:
            current = self.registry.automation.get_policy(name)
            if flip_enabled:
                row = set_policy(self.registry, name, self.actor, enabled=not current.enabled)
                note = f"policy {name} {'enabled' if row.enabled else 'disabled'}"
            else:
                row = set_policy(self.registry, name, self.actor, dry_run=not current.dry_run)
                note = f"policy {name} {'in dry-run' if row.dry_run else 'live'}"
        except RegistryError as err:
            note = str(err)
        self.app.call_from_thread(self.query_one("#alerts-status", Static).update, note)
        self._load()
