"""`:rollouts`, `:jobs`, `:audit`: views that arrive with the jobs and rollout engine."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

PLACEHOLDER_VIEWS: dict[str, str] = {
    "rollouts": "firmware rollouts in waves, with approvals",
    "jobs": "bulk commands (reboot, diagnostic) and their executions",
    "audit": "who did what and when",
}


class PlaceholderScreen(Screen[None]):
    HELP = "This view is not built yet; Esc goes back."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="placeholder.back"),
    ]

    def __init__(self, view: str) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text.assemble(
            (f":{self.view}", "bold"), f" — {PLACEHOLDER_VIEWS[self.view]}.\n\n",
            ("Not in this version of the console yet (it comes with the jobs and rollout "
             "engine). Esc goes back.", "dim")), id="placeholder-text")
        yield Footer()
