"""A virtual device table: only the visible rows are rendered, from paged registry queries.

Textual's DataTable holds every row (10k rows took ~4 s to fill, 100k ~38 s); this table
keeps a few pages of ``Registry.list_devices(offset, limit)`` and draws lines with the Line
API, so a 100,000-device fleet opens and scrolls at once. Pages and counts load in thread
workers and come back as messages.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fleet_tui.domain.query import QuerySyntaxError
from fleet_tui.domain.shadow import stored_in_sync
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import DeviceRow, Registry


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """What the table shows: a group and/or a query, in an order."""

    group: str | None = None
    where: str | None = None
    order_by: str = "id"
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    sortable: bool = True  # by the registry's index; group and sync are per-page lookups


COLUMNS: tuple[Column, ...] = (  # the status columns first: 80 columns show them all
    Column("id", " ID", 13),
    Column("group", "GROUP", 10, sortable=False),
    Column("firmware_version", "FIRMWARE", 8),
    Column("hardware_rev", "HW", 5),
    Column("online", "ON", 2),
    Column("in_sync", "SYNC", 4, sortable=False),
    Column("health", "HEALTH", 9),
    Column("last_seen", "SEEN", 4),
)
SORT_KEYS = tuple(c.key for c in COLUMNS if c.sortable)
# In sync, converging (the device has not reported what is desired yet), no shadow yet.
SYNC_CELLS: dict[bool | None, tuple[str, Style | None]] = {
    True: ("✓", Style(color="green")), False: ("Δ", Style(color="yellow")), None: ("-", None)}
HEALTH_STYLES = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}


def _in_sync(current: object, before: bool | None) -> bool | None:
    """Convergence from a ``current`` document of a live batch (None: deleted)."""
    if not isinstance(current, Mapping):
        return before
    return None if current.get("exists") is False else stored_in_sync(current)


def format_age(ts: float | None, now: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d`` since ``ts``; ``-`` when never seen."""
    if ts is None:
        return "-"
    age = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f"{int(age // size)}{unit}"
    return f"{int(age)}s"


class DeviceTable(ScrollView, can_focus=True):
    """Devices of the selected group, filtered by a query; one line per device."""

    HELP = (
        "Devices of the selected group. Move with the arrow keys, PageUp/PageDown, "
        "Home/End; Enter opens the device; `/` filters with the query language "
        '(e.g. `firmware_version < 2.2.0 and tag.region = "eu-west"`); `s` sorts by the '
        "next column and `S` reverses the order. Space selects devices (kept across "
        "pages and filters), b hands the selection to a bulk action, x clears it."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", id="devices.open"),
        Binding("s", "sort", "Sort", id="devices.sort"),
        Binding("S", "reverse", "Reverse", show=False, id="devices.reverse"),
        Binding("space", "toggle_select", "Select", id="devices.select"),
        Binding("b", "bulk", "Bulk action", id="devices.bulk"),
        Binding("x", "clear_selection", "Clear selection", show=False, id="devices.clear"),
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "First", show=False),
        Binding("end,G", "jump(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "device-table--header",
        "device-table--cursor",
        "device-table--placeholder",
    }
    DEFAULT_CSS = """
    DeviceTable { height: 1fr; }
    DeviceTable > .device-table--header { text-style: bold; background: $panel; }
    DeviceTable > .device-table--cursor { background: $accent 40%; }
    DeviceTable:focus > .device-table--cursor { background: $accent; color: $text; }
    DeviceTable > .device-table--placeholder { color: $text-muted; }
    """
    PAGE_SIZE = 100
    MAX_PAGES = 20

    cursor: reactive[int] = reactive(0)

    class Opened(Message):
        """The operator asked to open a device (Enter)."""

        def __init__(self, device_id: str) -> None:
            super().__init__()
            self.device_id = device_id

    class BulkActionRequested(Message):
        """The operator wants a bulk action on ``device_ids`` (the jobs view picks it up)."""

        def __init__(self, device_ids: list[str]) -> None:
            super().__init__()
            self.device_ids = device_ids

    class Loaded(Message):
        """A new query took effect: the table now shows ``total`` devices."""

        def __init__(self, table: DeviceTable, query: DeviceQuery, total: int) -> None:
            super().__init__()
            self.table = table
            self.device_query = query
            self.total = total

    class QueryFailed(Message):
        """The requested filter was refused; the table kept its previous contents."""

        def __init__(self, where: str, error: QuerySyntaxError | RegistryError) -> None:
            super().__init__()
            self.where = where
            self.error = error

    class CountReady(Message):
        def __init__(self, generation: int, query: DeviceQuery, total: int) -> None:
            super().__init__()
            self.generation = generation
            self.device_query = query
            self.total = total

    class PageReady(Message):
        def __init__(self, generation: int, page: int, rows: list[DeviceRow]) -> None:
            super().__init__()
            self.generation = generation
            self.page = page
            self.rows = rows

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.registry = registry
        self.clock = clock
        self.device_query: DeviceQuery = DeviceQuery()
        self.total: int | None = None  # None until the first count arrives
        self._generation = 0
        self._pages: OrderedDict[int, list[DeviceRow]] = OrderedDict()
        self._pending: set[int] = set()
        self.selected: set[str] = set()

    # ------------------------------------------------------------------ public API

    def show(self, query: DeviceQuery) -> None:
        """Switch to ``query``: it takes effect once it is validated and counted."""
        self._generation += 1
        self._count(self._generation, query)

    def set_group(self, group: str | None) -> None:
        self.show(dataclasses.replace(self.device_query, group=group))

    def set_where(self, where: str | None) -> None:
        self.show(dataclasses.replace(self.device_query, where=where or None))

    def reload(self) -> None:
        self.show(self.device_query)

    @property
    def current_row(self) -> DeviceRow | None:
        return self.row_at(self.cursor)

    def row_at(self, index: int) -> DeviceRow | None:
        """The row at ``index`` if its page is loaded (it never blocks)."""
        page = self._pages.get(index // self.PAGE_SIZE)
        if page is None:
            return None
        offset = index % self.PAGE_SIZE
        return page[offset] if offset < len(page) else None

    def apply_live(self, presence: Mapping[str, bool], health: Mapping[str, str],
                   shadows: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> None:
        """Patch loaded rows with live presence, health and shadow convergence (from the
        classic shadows' ``/update/documents``); the next page load re-reads."""
        synced: dict[str, Mapping[str, Any]] = {
            thing: documents for (thing, name), documents in (shadows or {}).items()
            if name == ""}
        if not presence and not health and not synced:
            return
        changed = False
        for rows in self._pages.values():
            for i, row in enumerate(rows):
                if row.id in presence or row.id in health or row.id in synced:
                    documents = synced.get(row.id)
                    current = documents.get("current") if documents else None
                    rows[i] = dataclasses.replace(
                        row,
                        online=presence.get(row.id, row.online),
                        health=health.get(row.id, row.health),
                        last_seen=self.clock() if row.id in presence else row.last_seen,
                        in_sync=_in_sync(current, row.in_sync),
                    )
                    changed = True
        if changed:
            self.refresh()

    # -------------------------------------------------------------------- workers

    @work(thread=True, exclusive=True, group="device-count")
    def _count(self, generation: int, query: DeviceQuery) -> None:
        try:
            if query.where:
                self.registry.parse_query(query.where)
            total = self.registry.count_devices(group=query.group, where=query.where)
        except (QuerySyntaxError, RegistryError) as err:
            self.post_message(self.QueryFailed(query.where or "", err))
            return
        self.post_message(self.CountReady(generation, query, total))

    @work(thread=True, group="device-pages")
    def _load_page(self, generation: int, query: DeviceQuery, page: int) -> None:
        try:
            rows = self.registry.list_devices(
                group=query.group, where=query.where, offset=page * self.PAGE_SIZE,
                limit=self.PAGE_SIZE, order_by=query.order_by, descending=query.descending,
            )
        except RegistryError as err:
            self.post_message(self.QueryFailed(query.where or "", err))
            return
        self.post_message(self.PageReady(generation, page, rows))

    def _request_page(self, page: int) -> None:
        if page in self._pages or page in self._pending or self.total is None:
            return
        self._pending.add(page)
        self._load_page(self._generation, self.device_query, page)

    def on_device_table_count_ready(self, message: CountReady) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self.device_query = message.device_query
        self.total = message.total
        self._pages.clear()
        self._pending.clear()
        self.cursor = 0
        self.virtual_size = Size(sum(c.width + 1 for c in COLUMNS), message.total + 1)
        self.scroll_to(0, 0, animate=False)
        if message.total:
            self._request_page(0)
            self._prefetch(0)
        self.refresh()
        self.post_message(self.Loaded(self, message.device_query, message.total))

    def on_device_table_page_ready(self, message: PageReady) -> None:
        message.stop()
        self._pending.discard(message.page)
        if message.generation != self._generation:
            return
        self._pages[message.page] = message.rows
        while len(self._pages) > self.MAX_PAGES:
            self._pages.popitem(last=False)
        self.refresh()

    # ------------------------------------------------------------------- actions

    @property
    def _body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def action_cursor(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * self._body_height)

    def action_jump(self, index: int) -> None:
        self._move_to(index if index >= 0 else (self.total or 0) - 1)

    def action_open(self) -> None:
        row = self.current_row
        if row is not None:
            self.post_message(self.Opened(row.id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "bulk":
            return bool(self.selected) and not getattr(self.app, "read_only", False)
        return True

    def action_toggle_select(self) -> None:
        row = self.current_row
        if row is None:
            return
        self.selected ^= {row.id}
        self.refresh_bindings()
        self._move_to(self.cursor + 1)
        self.refresh()

    def action_clear_selection(self) -> None:
        self.selected.clear()
        self.refresh_bindings()
        self.refresh()

    def action_bulk(self) -> None:
        if self.selected:
            self.post_message(self.BulkActionRequested(sorted(self.selected)))

    def action_sort(self) -> None:
        query = self.device_query
        following = SORT_KEYS[(SORT_KEYS.index(query.order_by) + 1) % len(SORT_KEYS)]
        self.show(dataclasses.replace(query, order_by=following))

    def action_reverse(self) -> None:
        query = self.device_query
        self.show(dataclasses.replace(query, descending=not query.descending))

    def _move_to(self, index: int) -> None:
        if not self.total:
            return
        self.cursor = max(0, min(index, self.total - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        top = int(self.scroll_y)
        self._prefetch(new)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + self._body_height:
            self.scroll_to(y=new - self._body_height + 1, animate=False)
        else:
            # Within the page only the two cursor lines change; no need to redraw every row.
            self.refresh_line(old + 1)  # + 1: the header is line 0
            self.refresh_line(new + 1)
            return
        self.refresh()

    def _prefetch(self, index: int) -> None:
        """Load the pages a screen either side of ``index`` before they are shown, so
        paging lands on rows that are already there (a page costs a few ms of queries)."""
        if not self.total:
            return
        reach = 2 * self._body_height
        for i in (index - reach, index + reach):
            if 0 <= i < self.total:
                self._request_page(i // self.PAGE_SIZE)

    # -------------------------------------------------------------------- render

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self._strip(self._header(), width, "device-table--header")
        index = int(self.scroll_y) + y - 1
        if self.total is None:
            return self._message_line("loading…", width) if y == 1 else Strip.blank(width)
        if self.total == 0:
            return self._message_line("no devices match", width) if y == 1 else Strip.blank(width)
        if index >= self.total:
            return Strip.blank(width)
        row = self.row_at(index)
        if row is None:
            self.call_later(self._request_page, index // self.PAGE_SIZE)
            return self._message_line("…", width)
        cursor = "device-table--cursor" if index == self.cursor else None
        return self._strip(self._cells(row), width, cursor)

    def _header(self) -> list[tuple[str, Style | None]]:
        arrow = "▼" if self.device_query.descending else "▲"
        cells: list[tuple[str, Style | None]] = []
        for col in COLUMNS:
            title = f"{col.title}{arrow}" if col.key == self.device_query.order_by else col.title
            cells.append((title.ljust(col.width)[: col.width] + " ", None))
        return cells

    def _cells(self, row: DeviceRow) -> list[tuple[str, Style | None]]:
        mark = "✓" if row.id in self.selected else " "
        group = row.groups[0] if row.groups else "-"
        if len(row.groups) > 1:
            group = f"{group[:7]}+{len(row.groups) - 1}"
        values: dict[str, tuple[str, Style | None]] = {
            "id": (mark + row.id, Style(bold=True) if mark != " " else None),
            "group": (group, None),
            "in_sync": SYNC_CELLS[row.in_sync],
            "firmware_version": (row.firmware_version or "-", None),
            "hardware_rev": (row.hardware_rev or "-", None),
            "online": ("●" if row.online else "○",
                       Style(color="green") if row.online else Style(dim=True)),
            "health": (row.health or "-", Style.parse(HEALTH_STYLES.get(row.health or "", "none"))),
            "last_seen": (format_age(row.last_seen, self.clock()), None),
        }
        return [
            (values[c.key][0].ljust(c.width)[: c.width] + " ", values[c.key][1]) for c in COLUMNS
        ]

    def _strip(
        self, cells: list[tuple[str, Style | None]], width: int, component: str | None
    ) -> Strip:
        base = self.rich_style
        if component is not None:
            base = base + self.get_component_rich_style(component)
        segments = [
            Segment(text, base + style if style is not None and component is None else base)
            for text, style in cells
        ]
        return Strip(segments).crop_extend(int(self.scroll_x), int(self.scroll_x) + width, base)

    def _message_line(self, text: str, width: int) -> Strip:
        style = self.rich_style + self.get_component_rich_style("device-table--placeholder")
        return Strip([Segment(f" {text}", style)]).extend_cell_length(width, style)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return sum(c.width + 1 for c in COLUMNS)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()
