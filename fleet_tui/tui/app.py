"""FleetApp: the console's shell. Group tree | device table, a fleet summary in the header,
`?` help for the focused widget, `:` jump, `/` filter, `esc` back, the command palette.

The app reads the registry only through the Registry API and receives live updates as
batched messages from a FleetService it runs on its own thread (optional, so the console also
runs on a registry alone, and in tests without a broker).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.dom import DOMNode
from textual.widgets import Footer, Header, Static

from fleet_tui.config import Settings
from fleet_tui.gc_pacing import GcPacing
from fleet_tui.registry.registry import Registry
from fleet_tui.service.alerts import open_alert_summary
from fleet_tui.service.job_control import Actor, Target
from fleet_tui.tui.commands import FleetCommands
from fleet_tui.tui.live import ClientShadowWriter, RunnableService, ServiceBridge, ShadowWriter
from fleet_tui.tui.messages import FleetSummary, FleetUpdated, SummaryLoaded
from fleet_tui.tui.screens.alerts import AlertsScreen
from fleet_tui.tui.screens.audit import AuditScreen
from fleet_tui.tui.screens.device import DeviceScreen
from fleet_tui.tui.screens.health import HealthScreen
from fleet_tui.tui.screens.help import HelpScreen
from fleet_tui.tui.screens.jobs import JobCreateScreen, JobsScreen
from fleet_tui.tui.screens.jump import JumpScreen
from fleet_tui.tui.screens.rollouts import RolloutsScreen
from fleet_tui.tui.widgets.device_table import DeviceTable
from fleet_tui.tui.widgets.filter_bar import FilterBar
from fleet_tui.tui.widgets.group_tree import GroupTree, all_group_names

APP_HELP = (
    "fleet-tui: the fleet as a tree of groups (left) and the selected group's devices "
    "(right). Tab moves between them."
)


SUMMARY_EVERY_S = 2.0  # the header's counts re-query the registry: not on every batch
AWAY_S = 5.0  # no input for this long: a collector sweep may pause the console now


class FleetApp(App[None]):
    TITLE = "fleet-tui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {FleetCommands}
    HELP = APP_HELP
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("slash", "filter", "Filter", id="app.filter"),
        Binding("colon", "jump", "Jump", id="app.jump"),
        Binding("escape", "go_back", "Back", show=False, id="app.back"),
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.force_quit"),
    ]

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        service: RunnableService | None = None,
        *,
        clock: Callable[[], float] = time.time,
        writer: ShadowWriter | None = None,
        pace_gc: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.registry = registry
        self.service = service
        self.clock = clock
        self.read_only = settings.read_only or not settings.allows("edit_desired")
        self.bridge: ServiceBridge | None = None
        # Desired state goes through the service's MQTT API, whichever process runs it.
        self.writer = writer if writer is not None else (
            ClientShadowWriter(settings) if service is not None else None)
        self.summary: FleetSummary | None = None
        self.selected_group: str | None = None
        self._summary_at = 0.0
        self.exit_after: float | None = None  # quit after this many seconds (smoke tests)
        # Off in tests: a frozen heap would keep every finished test app until a sweep.
        # Its full sweep (a few hundred ms on a big fleet) waits until nobody is typing.
        self._last_input = time.monotonic()
        self.gc_pacing = GcPacing(quiet=self._operator_away) if pace_gc else None
        if settings.keymap:
            self.set_keymap(settings.keymap)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield GroupTree(self.registry, id="groups")
            with Vertical(id="devices-pane"):
                yield Static("All devices", id="table-title")
                yield DeviceTable(self.registry, clock=self.clock, id="devices")
                yield FilterBar(id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "loading…" + (" · read-only" if self.read_only else "")
        self.query_one(DeviceTable).reload()
        self.query_one(GroupTree).focus()
        self._load_summary()
        if self.service is not None:
            self.bridge = ServiceBridge(self.service, self)
            self.bridge.start()
        if self.exit_after is not None:
            self.set_timer(self.exit_after, self.exit)
        if self.gc_pacing is not None:
            pacing = self.gc_pacing
            pacing.start()
            self.set_interval(pacing.freeze_s, pacing.step)

    def on_unmount(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        if self.gc_pacing is not None:
            self.gc_pacing.stop()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self._last_input = time.monotonic()
        await super().on_event(event)

    def _operator_away(self) -> bool:
        return time.monotonic() - self._last_input >= AWAY_S

    # ----------------------------------------------------------------- summary

    @work(thread=True, exclusive=True, group="summary")
    def _load_summary(self) -> None:
        registry = self.registry
        summary = FleetSummary(
            devices=registry.count_devices(),
            online=registry.count_devices(where="online = true"),
            unhealthy=registry.count_devices(where='health = "unhealthy"'),
            rollouts=registry.rollouts.count_active(),
            alerts=sum(open_alert_summary(registry).values()),
        )
        self.post_message(SummaryLoaded(summary))

    def on_summary_loaded(self, message: SummaryLoaded) -> None:
        self.summary = message.summary
        self.sub_title = str(message.summary) + (" · read-only" if self.read_only else "")

    def on_fleet_updated(self, message: FleetUpdated) -> None:
        batch = message.batch
        self.query_one(DeviceTable).apply_live(batch.presence, batch.health, batch.shadows)
        if (batch.presence or batch.health) and (
                time.monotonic() - self._summary_at >= SUMMARY_EVERY_S):
            self._summary_at = time.monotonic()
            self._load_summary()
        for screen in self.screen_stack:
            if isinstance(screen, DeviceScreen):
                for (thing, name), documents in batch.shadows.items():
                    if thing == screen.device_id:
                        screen.refresh_shadow(documents, name)
            elif isinstance(screen, HealthScreen) and (batch.presence or batch.health):
                screen.schedule_reload()

    # ------------------------------------------------------------- navigation

    @on(GroupTree.GroupSelected)
    def _group_selected(self, message: GroupTree.GroupSelected) -> None:
        self.selected_group = message.group
        self.query_one(DeviceTable).set_group(message.group)

    @on(DeviceTable.Loaded)
    def _table_loaded(self, message: DeviceTable.Loaded) -> None:
        query = message.device_query
        title = f"{query.group or 'All devices'} · {message.total} devices"
        if query.where:
            title += f" · / {query.where}"
        self.query_one("#table-title", Static).update(title)
        self.query_one(FilterBar).clear_error()

    @on(DeviceTable.QueryFailed)
    def _query_failed(self, message: DeviceTable.QueryFailed) -> None:
        self.query_one(FilterBar).show_error(message.where, message.error)

    @on(DeviceTable.Opened)
    def _device_opened(self, message: DeviceTable.Opened) -> None:
        self.open_device(message.device_id)

    @on(DeviceTable.BulkActionRequested)
    def _bulk_requested(self, message: DeviceTable.BulkActionRequested) -> None:
        if self.read_only:
            self.notify("read-only: no jobs", severity="warning", title="bulk action")
            return

        def created(note: str | None) -> None:
            if note:
                self.notify(note, title="job")
                self.show_view("jobs")

        self.push_screen(JobCreateScreen(self.registry, self.actor,
                                         Target(device_ids=tuple(message.device_ids))),
                         created)

    @on(FilterBar.Submitted)
    def _filter_submitted(self, message: FilterBar.Submitted) -> None:
        self.apply_filter(message.where)

    @on(FilterBar.Closed)
    def _filter_closed(self) -> None:
        self.query_one(DeviceTable).focus()

    def open_device(self, device_id: str) -> None:
        self.push_screen(DeviceScreen(self.registry, device_id, read_only=self.read_only,
                                      writer=self.writer, clock=self.clock))

    def apply_filter(self, where: str) -> None:
        self.query_one(DeviceTable).set_where(where or None)

    def show_group(self, name: str | None) -> None:
        self._to_main()
        tree = self.query_one(GroupTree)
        if name is None:
            tree.move_cursor(tree.root)
            self.selected_group = None
            self.query_one(DeviceTable).set_group(None)
        elif not tree.select_group(name):
            self.notify(f"no group {name!r}", severity="error")

    def show_view(self, name: str) -> None:
        self._to_main()
        if name == "groups":
            self.query_one(GroupTree).focus()
        elif name == "devices":
            self.query_one(DeviceTable).focus()
        elif name == "health":
            self.push_screen(HealthScreen(self.registry, self.selected_group,
                                          self.settings, clock=self.clock))
        elif name == "alerts":
            self.push_screen(AlertsScreen(self.registry, self.actor, read_only=self.read_only))
        elif name == "rollouts":
            self.push_screen(RolloutsScreen(self.registry, self.actor,
                                            read_only=self.read_only, clock=self.clock))
        elif name == "jobs":
            self.push_screen(JobsScreen(self.registry, self.actor, group=self.selected_group,
                                        read_only=self.read_only, clock=self.clock))
        elif name == "audit":
            self.push_screen(AuditScreen(self.registry, clock=self.clock))

    @property
    def actor(self) -> Actor:
        """Who acts, for the audit log: the configured operator (default: the OS user)."""
        fields = self.settings.audit_fields()
        return Actor(fields["actor"], fields["role"])

    def group_names(self) -> list[str]:
        return sorted(all_group_names(self.registry.group_tree()))

    def _to_main(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    # ----------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The filter belongs to the device list on the main screen.
        return not (action == "filter" and len(self.screen_stack) > 1)

    def action_filter(self) -> None:
        if len(self.screen_stack) > 1:
            return
        table = self.query_one(DeviceTable)
        self.query_one(FilterBar).open(table.device_query.where or "")

    def action_jump(self) -> None:
        def jumped(view: str | None) -> None:
            if view is not None:
                self.show_view(view)

        self.push_screen(JumpScreen(), jumped)

    def action_go_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()
            return
        bar = self.query_one(FilterBar)
        if bar.has_class("-open"):
            bar.action_close()
        elif isinstance(self.focused, DeviceTable):
            self.query_one(GroupTree).focus()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        node: DOMNode | None = self.focused or self.screen
        owner = node
        while owner is not None and not getattr(owner, "HELP", None):
            owner = owner.parent
        text = getattr(owner, "HELP", None) or APP_HELP
        title = type(owner).__name__ if owner is not None else "fleet-tui"
        keys: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            label = binding.description or binding.action
            # Our widgets' and the app's keys; Textual's generic scroll/focus keys are noise.
            owned = active.node is self or getattr(active.node, "HELP", None)
            ours = binding.id is not None and owned
            if not ours or (key, label) in seen or not active.enabled:
                continue
            seen.add((key, label))
            keys.append((self.get_key_display(binding), label))
        self.push_screen(HelpScreen(title, text, keys))
