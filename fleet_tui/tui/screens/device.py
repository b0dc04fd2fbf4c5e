"""The device view: the device's record and its shadow, desired | reported side by side
with the delta highlighted, the version and whether the device is in sync."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from fleet_tui.domain.query import DeviceRecord
from fleet_tui.domain.shadow import ShadowDocument
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry

MISSING = object()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of a JSON object as ``(dotted.path, value)``; arrays are leaves."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{path}.")
        else:
            yield path, value


def show_value(value: Any) -> str:
    if value is MISSING:
        return ""
    return orjson.dumps(value).decode() if not isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class ShadowView:
    """What the diff shows, computed once per document."""

    document: ShadowDocument | None

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> ShadowView:
        """From a stored shadow (``to_dict()`` plus ``exists``) or an ``update/documents``
        payload's ``current``; ``None`` or a deleted shadow shows as no shadow."""
        if stored is None or stored.get("exists", True) is False:
            return cls(None)
        fields = {k: v for k, v in stored.items() if k in ("state", "metadata", "version",
                                                          "timestamp")}
        try:
            return cls(ShadowDocument.from_dict(fields))
        except ValueError:
            return cls(None)

    @property
    def status(self) -> Text:
        doc = self.document
        if doc is None:
            return Text("no shadow yet", style="dim")
        state = (Text("✓ in sync", style="bold green") if doc.in_sync
                 else Text("⟳ converging…", style="bold yellow"))
        return Text.assemble(state, f"   version {doc.version}",
                             f"   Δ {len(list(flatten(doc.delta())))} keys")

    def table(self) -> Table | Text:
        if self.document is None:
            return Text("")
        table = Table(expand=True, box=None, pad_edge=False, header_style="bold")
        table.add_column("", width=1, no_wrap=True)
        table.add_column("key", ratio=2, no_wrap=True, overflow="ellipsis")
        table.add_column("desired", ratio=2, overflow="fold")
        table.add_column("reported", ratio=2, overflow="fold")
        doc = self.document
        desired = dict(flatten(doc.desired))
        reported = dict(flatten(doc.reported))
        delta = dict(flatten(doc.delta()))
        for key in sorted(desired.keys() | reported.keys()):
            changed = key in delta or any(key.startswith(f"{d}.") for d in delta)
            style = "bold yellow" if changed else ""
            table.add_row(
                Text("≠" if changed else " ", style=style),
                Text(key, style=style),
                Text(show_value(desired.get(key, MISSING)), style=style),
                Text(show_value(reported.get(key, MISSING))),
            )
        return table


class DeviceScreen(Screen[None]):
    """One device: its registry record and its shadow's desired | reported diff."""

    HELP = (
        "One device. The shadow shows desired | reported side by side; rows marked ≠ are "
        "the delta (desired values the device has not reported yet). 'in sync' means the "
        "delta is empty. Updates arrive live while the service runs. Esc goes back."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="device.back"),
        Binding("r", "reload", "Reload", id="device.reload"),
        Binding("e", "edit_desired", "Edit desired", id="device.edit"),
    ]
    MUTATING_ACTIONS: ClassVar[frozenset[str]] = frozenset({"edit_desired"})

    class Loaded(Message):
        def __init__(self, record: DeviceRecord | None, stored: dict[str, Any] | None,
                     error: str | None = None) -> None:
            super().__init__()
            self.record = record
            self.stored = stored
            self.error = error

    def __init__(self, registry: Registry, device_id: str, *, read_only: bool = False) -> None:
        super().__init__()
        self.registry = registry
        self.device_id = device_id
        self.read_only = read_only
        self.view = ShadowView(None)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"{self.device_id}  loading…", style="bold"), id="device-info")
        yield Static("", id="shadow-status")
        with VerticalScroll(id="shadow-scroll"):
            yield Static("", id="shadow-diff")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.device_id
        self.action_reload()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.read_only and action in self.MUTATING_ACTIONS)

    def action_reload(self) -> None:
        self._load()

    def action_edit_desired(self) -> None:
        self.notify("Editing desired state comes with the next console slice.",
                    title="edit desired")

    @work(thread=True, exclusive=True, group="device-load")
    def _load(self) -> None:
        try:
            record = self.registry.get_device(self.device_id)
            stored = self.registry.get_shadow(self.device_id)
        except RegistryError as err:
            self.post_message(self.Loaded(None, None, str(err)))
            return
        self.post_message(self.Loaded(record, stored))

    def on_device_screen_loaded(self, message: Loaded) -> None:
        info = self.query_one("#device-info", Static)
        if message.record is None:
            info.update(Text(f"{self.device_id}: {message.error}", style="bold red"))
            return
        rec = message.record
        online = Text("● online", style="green") if rec.online else Text("○ offline", style="dim")
        tags = "  ".join(f"{k}={v}" for k, v in sorted(rec.tags.items()))
        info.update(Text.assemble(
            (rec.id, "bold"), "  ", online,
            f"  fw {rec.firmware_version or '-'}  hw {rec.hardware_rev or '-'}",
            f"  health {rec.health or '-'}\n", (tags, "dim"),
        ))
        self._show(ShadowView.from_stored(message.stored))

    def refresh_shadow(self, documents: Mapping[str, Any]) -> None:
        """Apply a live ``update/documents`` payload (``previous``/``current``) or a stored
        document."""
        current = documents.get("current", documents)
        self._show(ShadowView.from_stored(current))

    def _show(self, view: ShadowView) -> None:
        self.view = view
        self.query_one("#shadow-status", Static).update(view.status)
        self.query_one("#shadow-diff", Static).update(view.table())
