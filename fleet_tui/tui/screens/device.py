"""The device view: the device's record, telemetry sparklines, and the live shadow diff
viewer (desired | reported with the delta highlighted, values that just changed flash),
named shadows, a history of the documents seen (time travel) and desired-state editing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Sparkline, Static

from fleet_tui.domain.query import DeviceRecord
from fleet_tui.registry.errors import NotFound, RegistryError
from fleet_tui.registry.registry import Registry
from fleet_tui.service.client import ServiceError
from fleet_tui.tui.desired_edit import DesiredEdit
from fleet_tui.tui.screens.edit_desired import EditDesiredScreen
from fleet_tui.tui.shadow_view import ShadowHistory, ShadowView, changed_keys

if TYPE_CHECKING:
    from fleet_tui.tui.live import ShadowWriter

SPARK_METRICS = ("heap_free", "rssi", "cpu_pct", "temp_c")
FLASH_S = 1.5


def bucket_means(series: Mapping[int, tuple[int, float, float, float]]) -> list[float]:
    """Per-bucket means, oldest first, from ``Registry.metric_series``."""
    return [total / count for _start, (count, total, _lo, _hi) in sorted(series.items())
            if count]


class DeviceScreen(Screen[None]):
    """One device: its record, sparklines and its shadows' desired | reported diff."""

    HELP = (
        "One device. The shadow shows desired | reported side by side; rows marked ≠ are "
        "the delta (desired values the device has not reported yet); values that just "
        "changed flash; 'in sync' means the delta is empty. Updates arrive live while the "
        "service runs. [ and ] step back and forth through the documents seen (time "
        "travel); n switches between the classic and named shadows; e edits desired state "
        "(shows the exact update and asks before sending). Esc goes back."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="device.back"),
        Binding("e", "edit_desired", "Edit desired", id="device.edit"),
        Binding("left_square_bracket", "history(-1)", "Older", id="device.older"),
        Binding("right_square_bracket", "history(1)", "Newer", id="device.newer"),
        Binding("n", "next_shadow", "Shadow", id="device.next_shadow"),
        Binding("r", "reload", "Reload", id="device.reload"),
    ]
    MUTATING_ACTIONS: ClassVar[frozenset[str]] = frozenset({"edit_desired"})

    class Loaded(Message):
        def __init__(self, record: DeviceRecord | None, shadows: dict[str, dict[str, Any]],
                     understood_keys: list[str] | None, series: dict[str, list[float]],
                     error: str | None = None) -> None:
            super().__init__()
            self.record = record
            self.shadows = shadows
            self.understood_keys = understood_keys
            self.series = series
            self.error = error

    class Sent(Message):
        def __init__(self, edit: DesiredEdit, answer: dict[str, Any] | None,
                     error: str | None = None) -> None:
            super().__init__()
            self.edit = edit
            self.answer = answer
            self.error = error

    def __init__(self, registry: Registry, device_id: str, *, read_only: bool = False,
                 writer: ShadowWriter | None = None,
                 clock: Any = time.time) -> None:
        super().__init__()
        self.registry = registry
        self.device_id = device_id
        self.read_only = read_only
        self.writer = writer
        self.clock = clock
        self.record: DeviceRecord | None = None
        self.understood_keys: list[str] | None = None
        self.shadow_name = ""
        self.histories: dict[str, ShadowHistory] = {"": ShadowHistory()}
        self.position: int | None = None  # None: follow the latest document
        self.flash: set[str] = set()
        self._flash_timer: Timer | None = None
        self.view = ShadowView(None)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"{self.device_id}  loading…", style="bold"), id="device-info")
        with Horizontal(id="device-sparks"):
            for metric in SPARK_METRICS:
                yield Static(metric, classes="spark-label", id=f"label-{metric}")
                yield Sparkline([], id=f"spark-{metric}", classes="spark")
        yield Static("", id="shadow-status")
        with VerticalScroll(id="shadow-scroll"):
            yield Static("", id="shadow-diff")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.device_id
        self.action_reload()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.read_only and action in self.MUTATING_ACTIONS:
            return False
        if action == "next_shadow":
            return len(self.histories) > 1
        return True

    # ------------------------------------------------------------------ loading

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="device-load")
    def _load(self) -> None:
        registry = self.registry
        try:
            record = registry.get_device(self.device_id)
            shadows = registry.get_shadows(self.device_id)
            understood: list[str] | None = None
            if record.firmware_version:
                try:
                    understood = registry.get_release(record.firmware_version).desired_keys
                except NotFound:
                    understood = None
            now = self.clock()
            series = {m: bucket_means(registry.metric_series(m, 60, now - 3600, now,
                                                             device=self.device_id))
                      for m in SPARK_METRICS}
        except RegistryError as err:
            self.post_message(self.Loaded(None, {}, None, {}, str(err)))
            return
        self.post_message(self.Loaded(record, shadows, understood, series))

    def on_device_screen_loaded(self, message: Loaded) -> None:
        info = self.query_one("#device-info", Static)
        if message.record is None:
            info.update(Text(f"{self.device_id}: {message.error}", style="bold red"))
            return
        rec = self.record = message.record
        self.understood_keys = message.understood_keys
        online = Text("● online", style="green") if rec.online else Text("○ offline", style="dim")
        tags = "  ".join(f"{k}={v}" for k, v in sorted(rec.tags.items()))
        info.update(Text.assemble(
            (rec.id, "bold"), "  ", online,
            f"  fw {rec.firmware_version or '-'}  hw {rec.hardware_rev or '-'}",
            f"  health {rec.health or '-'}\n", (tags, "dim"),
        ))
        for metric, values in message.series.items():
            self.query_one(f"#spark-{metric}", Sparkline).data = values
            last = f" {values[-1]:.0f}" if values else " -"
            self.query_one(f"#label-{metric}", Static).update(f"{metric}{last}")
        for name, stored in message.shadows.items():
            self.histories.setdefault(name, ShadowHistory()).add(ShadowView.from_stored(stored))
        self.refresh_bindings()
        self._show()

    # --------------------------------------------------------------------- live

    def refresh_shadow(self, documents: Mapping[str, Any], name: str = "") -> None:
        """Apply a live ``update/documents`` payload (``previous``/``current``) or a
        stored document for shadow ``name``."""
        history = self.histories.setdefault(name, ShadowHistory())
        previous = documents.get("previous")
        if isinstance(previous, Mapping) and "version" in previous:
            history.add(ShadowView.from_stored(previous))
        stored = documents.get("current", documents)
        if "timestamp" not in stored and "timestamp" in documents:  # AWS puts it outside
            stored = {**stored, "timestamp": documents["timestamp"]}
        current = ShadowView.from_stored(stored)
        if current.document is None and "current" in documents:
            history.views.clear()  # deleted: nothing to travel through any more
        shown = self.view
        added = history.add(current)
        self.refresh_bindings()
        if name != self.shadow_name or self.position is not None:
            self._show()  # travelling: keep the old version on screen, update the position
            return
        if added or current.document is None:
            self._flash(changed_keys(shown.document, current.document))
        self._show()

    def _flash(self, keys: set[str]) -> None:
        if not keys:
            return
        self.flash = keys
        if self._flash_timer is not None:
            self._flash_timer.stop()
        self._flash_timer = self.set_timer(FLASH_S, self._end_flash)

    def _end_flash(self) -> None:
        self.flash = set()
        self._show()

    # ------------------------------------------------------------------ showing

    def _show(self) -> None:
        history = self.histories.get(self.shadow_name) or ShadowHistory()
        position = ""
        if self.position is not None and len(history):
            self.position = max(0, min(self.position, len(history) - 1))
            view = history[self.position]
            position = f"history {self.position + 1}/{len(history)} (] newer)"
        else:
            self.position = None
            view = history[-1] if len(history) else ShadowView(None)
        self.view = view
        shadow = f"shadow {self.shadow_name}   " if self.shadow_name else ""
        if len(self.histories) > 1:
            shadow = f"shadow {self.shadow_name or 'classic'} (n: {len(self.histories)})   "
        status = Text(shadow, style="bold cyan")
        status.append_text(view.status(position))
        self.query_one("#shadow-status", Static).update(status)
        flash = self.flash if self.position is None else set()
        self.query_one("#shadow-diff", Static).update(view.table(flash))

    def action_history(self, step: int) -> None:
        history = self.histories.get(self.shadow_name)
        if history is None or not len(history):
            return
        current = len(history) - 1 if self.position is None else self.position
        target = current + step
        self.position = None if target >= len(history) - 1 else max(0, target)
        self._show()

    def action_next_shadow(self) -> None:
        names = sorted(self.histories)
        self.shadow_name = names[(names.index(self.shadow_name) + 1) % len(names)]
        self.position = None
        self._show()

    # ------------------------------------------------------------------ editing

    def action_edit_desired(self) -> None:
        if self.read_only:
            return
        if self.writer is None:
            self.notify("No shadow service to send to (the console runs without one).",
                        title="edit desired", severity="warning")
            return
        history = self.histories.get(self.shadow_name)
        latest = history[-1].document if history is not None and len(history) else None
        firmware = self.record.firmware_version if self.record else None

        def edited(edit: DesiredEdit | None) -> None:
            if edit is not None:
                self._send(edit)

        self.app.push_screen(EditDesiredScreen(self.device_id, self.shadow_name, latest,
                                               firmware, self.understood_keys), edited)

    @work(thread=True, group="device-send")
    def _send(self, edit: DesiredEdit) -> None:
        writer = cast("ShadowWriter", self.writer)
        try:
            answer = writer.update_desired(edit.thing, edit.patch, edit.name, edit.version)
        except ServiceError as err:
            self.post_message(self.Sent(edit, None, str(err)))
            return
        self.post_message(self.Sent(edit, answer))

    def on_device_screen_sent(self, message: Sent) -> None:
        if message.error is not None:
            self.notify(message.error, title="desired state refused", severity="error")
            return
        version = (message.answer or {}).get("version")
        self.notify(f"accepted as version {version}; waiting for the device to converge",
                    title="desired state sent")
