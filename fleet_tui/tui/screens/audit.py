"""`:audit`: the audit log, newest first, filterable (`/`: ``action=rollout.*``,
``actor=alice``, ``target=ID``, or a bare word for the action), with the hash chain
verified on every refresh and a mark on the entry where it breaks."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from fleet_tui.registry.audit import AuditRecord, ChainReport
from fleet_tui.registry.registry import Registry

FILTER_KEYS = ("action", "actor", "target")
REFRESH_S = 2.0
AUDIT_CSS = """
#audit-chain { height: 1; padding: 0 1; }
#audit-table { height: 1fr; }
#audit-filter { border: none; height: 1; padding: 0 1; display: none; }
#audit-filter.-open { display: block; }
#audit-error { height: auto; color: $error; padding: 0 1; }
"""


class AuditFilterError(ValueError):
    pass


def parse_filter(text: str) -> dict[str, str]:
    """``action=rollout.* actor=alice`` -> {"action": ..., "actor": ...}; a bare word is
    the action (``*`` is a wildcard)."""
    out: dict[str, str] = {}
    for pos, word in enumerate(text.split()):
        key, sep, value = word.partition("=")
        if not sep:
            key, value = "action", word
        if key not in FILTER_KEYS or not value:
            raise AuditFilterError(f"filter word {pos + 1} {word!r}: expected "
                                   f"{'|'.join(FILTER_KEYS)}=VALUE")
        out[key] = value
    if "action" in out and "*" not in out["action"] and "." not in out["action"]:
        out["action"] = out["action"] + "*"
    return out


class AuditScreen(Screen[None]):
    DEFAULT_CSS = AUDIT_CSS
    HELP = ("Who did what and when, newest first. The chain of hashes is verified on every "
            "refresh: ✓ intact, or ✗ and the entry where it breaks (an entry edited, removed "
            "or reordered). / filters (action=rollout.* actor=alice target=ID), Esc clears "
            "the filter or goes back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="audit.back"),
        Binding("slash", "filter", "Filter", id="audit.filter"),
    ]

    class Loaded(Message):
        def __init__(self, entries: list[AuditRecord], report: ChainReport) -> None:
            super().__init__()
            self.entries, self.report = entries, report

    def __init__(self, registry: Registry, *, clock: Any = time.time) -> None:
        super().__init__()
        self.registry, self.clock = registry, clock
        self.filters: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("verifying the chain…", id="audit-chain")
        yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
        yield Input(placeholder="action=rollout.* actor=alice target=ID", id="audit-filter")
        yield Static("", id="audit-error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("", "#", "time (UTC)", "actor", "role", "action",
                                              "target", "details")
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def reload(self) -> None:
        self._load(dict(self.filters))

    @work(thread=True, exclusive=True, group="audit-load")
    def _load(self, filters: dict[str, str]) -> None:
        entries = self.registry.audit.entries(
            action=filters.get("action"), actor=filters.get("actor"),
            target=filters.get("target"), newest_first=True, limit=500)
        self.post_message(self.Loaded(entries, self.registry.audit.verify()))

    def on_audit_screen_loaded(self, message: Loaded) -> None:
        report = message.report
        chain = self.query_one("#audit-chain", Static)
        if report.ok:
            chain.update(Text(f"✓ {report}", style="bold green"))
        else:
            chain.update(Text(f"✗ {report}", style="bold red"))
        table = self.query_one(DataTable)
        table.clear()
        broken = report.broken_at
        for e in message.entries:
            bad = broken is not None and e.id >= broken
            mark = Text("✗" if broken == e.id else "!" if bad else "✓",
                        style="bold red" if bad else "green")
            details = ", ".join(f"{k}={v}" for k, v in e.details.items())
            table.add_row(mark, str(e.id), time.strftime("%m-%d %H:%M:%S", time.gmtime(e.ts)),
                          e.actor, e.role, Text(e.action, style="bold red" if bad else ""),
                          e.target, details[:80], key=str(e.id))
        title = "audit" + ("".join(f" · {k}={v}" for k, v in self.filters.items()))
        self.sub_title = f"{title} · {len(message.entries)} entries"

    def action_filter(self) -> None:
        box = self.query_one("#audit-filter", Input)
        box.add_class("-open")
        box.focus()

    @on(Input.Submitted, "#audit-filter")
    def _filtered(self, event: Input.Submitted) -> None:
        error = self.query_one("#audit-error", Static)
        try:
            self.filters = parse_filter(event.value)
        except AuditFilterError as err:
            error.update(str(err))
            return
        error.update("")
        event.input.remove_class("-open")
        self.query_one(DataTable).focus()
        self.reload()

    def action_back(self) -> None:
        box = self.query_one("#audit-filter", Input)
        if box.has_class("-open"):
            box.remove_class("-open")
            self.query_one(DataTable).focus()
        elif self.filters:
            self.filters = {}
            box.value = ""
            self.reload()
        else:
            self.app.pop_screen()
