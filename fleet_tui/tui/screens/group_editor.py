"""The dynamic-group query editor: as you type, the live number of matching devices (or the
error at its column); Enter on the query (or ctrl+s) saves the group."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, Static

from fleet_tui.domain.query import QuerySyntaxError
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import GroupNode, Registry
from fleet_tui.tui.widgets.filter_bar import error_text

PREVIEW_DELAY_S = 0.15  # count after a short pause in typing, not on every key


class GroupEditorScreen(ModalScreen[str | None]):
    """Creates (``group`` None) or edits a dynamic group; returns its name once saved."""

    HELP = (
        "A dynamic group is a query over the devices, e.g. "
        '`tag.region = "eu-west" and firmware_version < 2.2.0`. The count of matching '
        "devices updates as you type; an error shows at its column. Enter in the query "
        "(or ctrl+s) saves, Esc cancels."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="group_editor.cancel"),
        Binding("ctrl+s", "save", "Save", id="group_editor.save"),
    ]

    class Counted(Message):
        def __init__(self, query: str, count: int | None,
                     error: QuerySyntaxError | RegistryError | None) -> None:
            super().__init__()
            self.query = query
            self.count = count
            self.error = error

    class Saved(Message):
        def __init__(self, name: str | None, error: str | None) -> None:
            super().__init__()
            self.name = name
            self.error = error

    def __init__(self, registry: Registry, group: GroupNode | None = None,
                 parent: str | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.group = group
        self.parent_group = parent
        self.count: int | None = None
        self.error: QuerySyntaxError | RegistryError | None = None
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        editing = self.group is not None
        under = f" under {self.parent_group}" if self.parent_group else ""
        title = (f"edit dynamic group {self.group.name}" if self.group is not None
                 else f"new dynamic group{under}")
        with Vertical(id="group-editor-box"):
            yield Static(Text(title, style="bold"), id="group-editor-title")
            yield Input(self.group.name if self.group else "", placeholder="group name",
                        id="group-name", disabled=editing)
            yield Input(self.group.query or "" if self.group else "",
                        placeholder='query, e.g. tag.region = "eu-west"', id="group-query")
            yield Static("", id="group-preview")
            yield Static(Text("enter: save · esc: cancel", style="dim"), id="group-hint")

    def on_mount(self) -> None:
        self.query_one("#group-query" if self.group else "#group-name", Input).focus()
        self._count(self.query_one("#group-query", Input).value)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "group-query":
            return
        if self._timer is not None:
            self._timer.stop()
        value = event.value
        self._timer = self.set_timer(PREVIEW_DELAY_S, lambda: self._count(value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "group-name":
            self.query_one("#group-query", Input).focus()
        else:
            self.action_save()

    @work(thread=True, exclusive=True, group="group-count")
    def _count(self, query: str) -> None:
        if not query.strip():
            self.post_message(self.Counted(query, None, None))
            return
        try:
            self.registry.parse_query(query)
            count = self.registry.count_devices(where=query)
        except (QuerySyntaxError, RegistryError) as err:
            self.post_message(self.Counted(query, None, err))
            return
        self.post_message(self.Counted(query, count, None))

    def on_group_editor_screen_counted(self, message: Counted) -> None:
        if message.query != self.query_one("#group-query", Input).value:
            return  # typed on meanwhile: a newer count is on its way
        preview = self.query_one("#group-preview", Static)
        self.count, self.error = message.count, message.error
        if message.error is not None:
            preview.update(error_text(message.query, message.error))
        elif message.count is None:
            preview.update(Text("type a query", style="dim"))
        else:
            preview.update(Text.assemble(("matches ", "dim"), (f"{message.count}", "bold"),
                                         (" devices now", "dim")))

    def action_save(self) -> None:
        name = self.query_one("#group-name", Input).value.strip()
        query = self.query_one("#group-query", Input).value.strip()
        if not name:
            self.query_one("#group-preview", Static).update(
                Text("the group needs a name", style="bold red"))
            return
        self._save(name, query)

    @work(thread=True, exclusive=True, group="group-save")
    def _save(self, name: str, query: str) -> None:
        try:
            self.registry.parse_query(query)
            if self.group is not None:
                self.registry.update_group_query(name, query)
            else:
                self.registry.create_group(name, query=query, parent=self.parent_group)
        except QuerySyntaxError as err:
            self.post_message(self.Counted(query, None, err))
            return
        except (RegistryError, ValueError) as err:
            self.post_message(self.Saved(None, str(err)))
            return
        self.post_message(self.Saved(name, None))

    def on_group_editor_screen_saved(self, message: Saved) -> None:
        if message.error is not None:
            self.query_one("#group-preview", Static).update(
                Text(f"error: {message.error}", style="bold red"))
            return
        self.dismiss(message.name)

    def action_cancel(self) -> None:
        self.dismiss(None)
