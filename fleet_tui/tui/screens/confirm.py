"""Confirmations for actions that change many devices: type the name (k9s-style) for a
fleet-wide start, or press y for a stop that cannot be undone."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

CONFIRM_CSS = """
TypeToConfirmScreen, YesNoScreen { align: center middle; }
.confirm-box {
    width: 90%; max-width: 80; height: auto; border: round $warning;
    padding: 0 1; background: $panel;
}
.confirm-box Input { border: none; height: 1; padding: 0 1; margin-bottom: 1; }
.confirm-error { color: $error; height: auto; }
"""


class TypeToConfirmScreen(ModalScreen[bool]):
    """Returns True only once the operator typed ``expected`` exactly."""

    DEFAULT_CSS = CONFIRM_CSS
    HELP = "Type the shown name and press Enter to go ahead; Esc cancels."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="confirm.cancel"),
    ]

    def __init__(self, title: str, explanation: str, expected: str) -> None:
        super().__init__()
        self.title_text, self.explanation, self.expected = title, explanation, expected

    def compose(self) -> ComposeResult:
        with Vertical(classes="confirm-box"):
            yield Static(Text(self.title_text, style="bold"))
            yield Static(self.explanation)
            yield Static(Text.assemble("type ", (self.expected, "bold reverse"),
                                       " to confirm, Esc cancels"))
            yield Input(placeholder=self.expected, id="confirm-input")
            yield Static("", classes="confirm-error", id="confirm-error")

    @on(Input.Submitted, "#confirm-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.expected:
            self.dismiss(True)
        else:
            self.query_one("#confirm-error", Static).update(
                f"{event.value.strip()!r} is not {self.expected!r}: nothing was started")

    def action_cancel(self) -> None:
        self.dismiss(False)


class YesNoScreen(ModalScreen[bool]):
    """y goes ahead, n or Esc does not."""

    DEFAULT_CSS = CONFIRM_CSS
    HELP = "y confirms, n or Esc cancels."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, explanation: str) -> None:
        super().__init__()
        self.title_text, self.explanation = title, explanation

    def compose(self) -> ComposeResult:
        with Vertical(classes="confirm-box"):
            yield Static(Text(self.title_text, style="bold"))
            yield Static(self.explanation)
            yield Static(Text("y: yes · n/Esc: no", style="dim"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
