"""`e` on a device: edit desired state. As you type, the preview shows the exact update that
will be sent, the per-key diff, and warnings when the device's firmware does not understand
a key; Enter asks for confirmation, `y` sends, anything else goes back to editing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from fleet_tui.domain.shadow import ShadowDocument
from fleet_tui.tui.desired_edit import DesiredEdit, EditError, describe_row, plan_edit


class EditDesiredScreen(ModalScreen[DesiredEdit | None]):
    """Returns the confirmed edit, or None when cancelled."""

    HELP = (
        "Edit desired state as key=value pairs: values are JSON when they parse (true, 30, "
        '"text", null deletes a key), a.b=1 nests. The preview is the exact update sent, '
        "made against the shadow's current version (a concurrent change answers 409). "
        "Enter asks for confirmation, y sends, Esc cancels."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="edit.cancel"),
        Binding("y", "confirm", "Send", show=False, id="edit.confirm"),
        Binding("n", "back", "Back", show=False, id="edit.back"),
    ]

    def __init__(self, thing: str, name: str, document: ShadowDocument | None,
                 firmware_version: str | None, understood_keys: Sequence[str] | None,
                 initial: str = "") -> None:
        super().__init__()
        self.thing = thing
        self.shadow_name = name
        self.document = document
        self.firmware_version = firmware_version
        self.understood_keys = understood_keys
        self.initial = initial
        self.edit: DesiredEdit | None = None
        self.error: EditError | None = None
        self.confirming = False

    def compose(self) -> ComposeResult:
        shadow = f" · shadow {self.shadow_name}" if self.shadow_name else ""
        version = self.document.version if self.document else "-"
        with Vertical(id="edit-box"):
            yield Static(Text(f"edit desired · {self.thing}{shadow} · version {version}",
                              style="bold"), id="edit-title")
            yield Input(self.initial, placeholder="led_is_on=true telemetry_interval_s=30",
                        id="edit-input")
            yield Static("", id="edit-preview")
            yield Static("", id="edit-hint")

    def on_mount(self) -> None:
        self._preview(self.initial)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("confirm", "back"):
            return self.confirming
        return True

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.confirming = False
        self._preview(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._preview(event.value)
        if self.edit is None or not self.edit.rows:
            return
        self.confirming = True
        self.query_one(Input).disabled = True
        self.focus()
        self._show_hint()
        self.refresh_bindings()

    def action_confirm(self) -> None:
        if self.confirming and self.edit is not None:
            self.dismiss(self.edit)

    def action_back(self) -> None:
        self.confirming = False
        field = self.query_one(Input)
        field.disabled = False
        field.focus()
        self._show_hint()
        self.refresh_bindings()

    def action_cancel(self) -> None:
        if self.confirming:
            self.action_back()
        else:
            self.dismiss(None)

    def _preview(self, text: str) -> None:
        preview = self.query_one("#edit-preview", Static)
        self.edit, self.error = None, None
        if not text.strip():
            preview.update(Text("type key=value pairs; null deletes a key", style="dim"))
            self._show_hint()
            return
        try:
            self.edit = plan_edit(self.thing, self.shadow_name, text, self.document,
                                  self.firmware_version, self.understood_keys)
        except EditError as err:
            self.error = err
            where = f"col {err.col}: " if err.col else ""
            pad = " " * max(0, err.col - 1)
            caret = Text(f"{pad}^ {where}{err.message}" if err.col else err.message,
                         style="bold red")
            preview.update(caret)
            self._show_hint()
            return
        preview.update(self._render_edit(self.edit))
        self._show_hint()

    @staticmethod
    def _render_edit(edit: DesiredEdit) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold", expand=True)
        table.add_column("key", ratio=2, no_wrap=True, overflow="ellipsis")
        table.add_column("desired now", ratio=2, overflow="fold")
        table.add_column("", width=1)
        table.add_column("after", ratio=2, overflow="fold")
        for row in edit.rows:
            key, before, after = describe_row(row)
            table.add_row(key, Text(before, style="dim"), "→", Text(after, style="bold yellow"))
        parts: list[Text | Table] = [table, Text.assemble(("sends ", "dim"),
                                                          (edit.body_json(), "bold"))]
        parts += [Text(f"⚠ {w}", style="bold red") for w in edit.warnings]
        return Group(*parts)

    def _show_hint(self) -> None:
        hint = self.query_one("#edit-hint", Static)
        if self.confirming and self.edit is not None:
            n = len(self.edit.rows)
            hint.update(Text.assemble(
                (f"Send {n} change{'s' if n != 1 else ''} to {self.thing}? ", "bold"),
                ("y", "bold reverse"), " send   ", ("n/esc", "bold reverse"), " back"))
        else:
            hint.update(Text("enter: review and confirm · esc: cancel", style="dim"))
