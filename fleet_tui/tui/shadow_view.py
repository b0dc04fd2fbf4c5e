"""What the shadow diff viewer shows: desired | reported per leaf with the delta marked,
per-key metadata timestamps, and a short history of the documents seen ("time travel").

Rendering only (Rich renderables from domain documents); the device screen owns them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from rich.table import Table
from rich.text import Text

from fleet_tui.domain.shadow import ShadowDocument

MISSING: Any = object()
HISTORY_SIZE = 50


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


def leaf_timestamps(metadata: Mapping[str, Any], section: str) -> dict[str, int]:
    """``dotted.path -> timestamp`` from a document's ``metadata.desired|reported``."""
    out: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            if "timestamp" in node and len(node) == 1 and prefix:
                out[prefix.rstrip(".")] = int(node["timestamp"])
                return
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, list):  # arrays carry one entry per element: use the newest
            stamps = [int(e["timestamp"]) for e in node
                      if isinstance(e, Mapping) and "timestamp" in e]
            if stamps:
                out[prefix.rstrip(".")] = max(stamps)

    walk(metadata.get(section, {}), "")
    return out


def format_stamp(ts: int | None) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) if ts else ""


def changed_keys(before: ShadowDocument | None, after: ShadowDocument | None) -> set[str]:
    """Leaves whose desired or reported value differs between two documents."""
    if before is None or after is None:
        return set()
    out: set[str] = set()
    for section in ("desired", "reported"):
        old = dict(flatten(getattr(before, section)))
        new = dict(flatten(getattr(after, section)))
        out |= {k for k in old.keys() | new.keys() if old.get(k, MISSING) != new.get(k, MISSING)}
    return out


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
    def version(self) -> int | None:
        return self.document.version if self.document is not None else None

    def status(self, position: str = "") -> Text:
        doc = self.document
        if doc is None:
            return Text("no shadow yet", style="dim")
        state = (Text("✓ in sync", style="bold green") if doc.in_sync
                 else Text("⟳ converging…", style="bold yellow"))
        text = Text.assemble(state, f"   version {doc.version}",
                             f"   Δ {len(list(flatten(doc.delta())))} keys",
                             f"   {format_stamp(doc.timestamp)}")
        if position:
            text.append(f"   {position}", style="bold magenta")
        return text

    def table(self, flash: set[str] | None = None) -> Table | Text:
        if self.document is None:
            return Text("")
        flash = flash or set()
        table = Table(expand=True, box=None, pad_edge=False, header_style="bold")
        table.add_column("", width=1, no_wrap=True)
        table.add_column("key", ratio=3, no_wrap=True, overflow="ellipsis")
        table.add_column("desired", ratio=2, overflow="fold")
        table.add_column("reported", ratio=2, overflow="fold")
        table.add_column("updated", width=8, no_wrap=True)
        doc = self.document
        desired = dict(flatten(doc.desired))
        reported = dict(flatten(doc.reported))
        delta = dict(flatten(doc.delta()))
        stamps = leaf_timestamps(doc.metadata, "reported")
        desired_stamps = leaf_timestamps(doc.metadata, "desired")
        for key in sorted(desired.keys() | reported.keys()):
            changed = key in delta or any(key.startswith(f"{d}.") for d in delta)
            style = "bold yellow" if changed else ""
            just = "reverse" if key in flash else ""
            stamp = max(stamps.get(key, 0), desired_stamps.get(key, 0)) or None
            table.add_row(
                Text("≠" if changed else " ", style=style),
                Text(key, style=style),
                Text(show_value(desired.get(key, MISSING)), style=f"{style} {just}".strip()),
                Text(show_value(reported.get(key, MISSING)), style=just),
                Text(format_stamp(stamp), style="dim"),
            )
        return table


class ShadowHistory:
    """The last documents of one shadow, by version, oldest first."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self.size = size
        self.views: list[ShadowView] = []

    def add(self, view: ShadowView) -> bool:
        """Record ``view`` in version order; False when its version is already there."""
        version = view.version
        if version is None or any(v.version == version for v in self.views):
            return False
        self.views.append(view)
        self.views.sort(key=lambda v: v.version or 0)
        del self.views[: -self.size]
        return True

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> ShadowView:
        return self.views[index]
