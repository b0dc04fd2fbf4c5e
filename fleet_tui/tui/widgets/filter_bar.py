"""The `/` filter: a query input under a list, with errors shown at their column."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from fleet_tui.domain.query import QuerySyntaxError
from fleet_tui.registry.errors import RegistryError


def error_text(query: str, error: QuerySyntaxError | RegistryError) -> Text:
    """``^ message`` under the query, the caret at the error's column."""
    if isinstance(error, QuerySyntaxError):
        pad = " " * (len("/ ") + max(0, error.col - 1))
        return Text.assemble(
            (f"/ {query}\n", "bold"), (f"{pad}^ col {error.col}: {error.message}", "bold red")
        )
    return Text(f"error: {error}", style="bold red")


class FilterBar(Vertical):
    """Hidden until `/`; Enter applies the query, Esc closes (an empty query clears it)."""

    HELP = (
        "Filter the device list with the query language: `= != < <= > >=` (versions compare "
        'as versions), `in (...)`, `~ "eu-*"`, `has(key)`, `and or not ( )`; tags as '
        "`tag.region`. Enter applies, Esc closes; an empty filter shows the whole group."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="filter.close"),
    ]

    class Submitted(Message):
        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where

    class Closed(Message):
        pass

    def compose(self) -> ComposeResult:
        yield Input(placeholder='query, e.g. firmware_version < 2.2.0', id="filter-input")
        yield Static("", id="filter-error")

    def open(self, text: str = "") -> None:
        self.add_class("-open")
        field = self.query_one(Input)
        if text:
            field.value = text
        field.focus()

    def show_error(self, query: str, error: QuerySyntaxError | RegistryError) -> None:
        self.add_class("-open")
        self.query_one("#filter-error", Static).update(error_text(query, error))
        self.add_class("-error")

    def clear_error(self) -> None:
        self.query_one("#filter-error", Static).update("")
        self.remove_class("-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.clear_error()
        self.post_message(self.Submitted(event.value.strip()))

    def action_close(self) -> None:
        self.clear_error()
        self.remove_class("-open")
        self.post_message(self.Closed())
