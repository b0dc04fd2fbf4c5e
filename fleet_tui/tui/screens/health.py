"""`:health`: presence and health counts of the selected group (sparklines come later)."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry

HEALTH_ORDER = ("healthy", "degraded", "unhealthy", None)


class HealthScreen(Screen[None]):
    HELP = ("Presence and health of the selected group's devices (from their latest "
            "telemetry). Esc goes back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="health.back"),
        Binding("r", "reload", "Reload", id="health.reload"),
    ]

    class Loaded(Message):
        def __init__(self, online: Counter[bool], health: Counter[str | None],
                     error: str | None = None) -> None:
            super().__init__()
            self.online = online
            self.health = health
            self.error = error

    def __init__(self, registry: Registry, group: str | None) -> None:
        super().__init__()
        self.registry = registry
        self.group = group
        self.counts: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"health · {self.group or 'all devices'}", style="bold"),
                     id="health-title")
        yield Static("loading…", id="health-counts")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="health-load")
    def _load(self) -> None:
        try:
            records = self.registry.health_records(group=self.group)
        except RegistryError as err:
            self.post_message(self.Loaded(Counter(), Counter(), str(err)))
            return
        self.post_message(self.Loaded(Counter(r[1] for r in records),
                                       Counter(r[2] for r in records)))

    def on_health_screen_loaded(self, message: Loaded) -> None:
        counts = self.query_one("#health-counts", Static)
        if message.error:
            counts.update(Text(message.error, style="bold red"))
            return
        self.counts = {"online": message.online[True], "offline": message.online[False]}
        self.counts |= {state or "no telemetry": message.health[state] for state in HEALTH_ORDER}
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for label, count in self.counts.items():
            table.add_row(label, str(count))
        counts.update(table)
