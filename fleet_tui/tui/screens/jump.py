"""`:`: jump to a view by name, k9s style (`:groups`, `:devices`, `:health`)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

VIEWS: dict[str, str] = {
    "groups": "the group tree",
    "devices": "the device table",
    "health": "health of the selected group",
    "rollouts": "firmware rollouts",
    "jobs": "bulk commands",
    "audit": "the audit log",
    "alerts": "open alerts and the policies that raise them",
}


class JumpScreen(ModalScreen[str | None]):
    """Returns the chosen view's name, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="jump.cancel"),
    ]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="groups · devices · health · rollouts · jobs · audit",
                    id="jump-input", suggester=SuggestFromList(list(VIEWS), case_sensitive=False))
        yield Static("", id="jump-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        name = event.value.strip().lstrip(":").lower()
        matches = [v for v in VIEWS if v.startswith(name)] if name else []
        if len(matches) == 1:
            self.dismiss(matches[0])
        else:
            self.query_one("#jump-error", Static).update(
                f"no view {name!r}: try " + ", ".join(f":{v}" for v in VIEWS))

    def action_cancel(self) -> None:
        self.dismiss(None)
