"""Editing desired state: what the operator typed, the exact update that will be sent, the
per-key diff it causes, and the keys the device's firmware does not understand.

Pure logic (no Textual): the edit screen shows a :class:`DesiredEdit` and sends its
:meth:`DesiredEdit.body` through a :class:`~fleet_tui.tui.live.ShadowWriter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet_tui.domain.shadow import ShadowDocument, ShadowError
from fleet_tui.service.client import parse_assignments
from fleet_tui.tui.shadow_view import MISSING, flatten, show_value


class EditError(ValueError):
    """The typed text is not a valid edit; ``col`` is 1-based (0: the whole edit)."""

    def __init__(self, message: str, col: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


@dataclass(frozen=True, slots=True)
class DiffRow:
    key: str
    before: Any  # MISSING when the key is new
    after: Any  # None deletes the key


@dataclass(frozen=True, slots=True)
class DesiredEdit:
    thing: str
    name: str  # "" = the classic shadow
    patch: dict[str, Any]
    version: int | None  # the version the edit was made against (409 if it moved on)
    rows: list[DiffRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The ``/update`` request the service receives (the writer adds a clientToken)."""
        body: dict[str, Any] = {"state": {"desired": self.patch}}
        if self.version is not None:
            body["version"] = self.version
        return body

    def body_json(self) -> str:
        return orjson.dumps(self.body()).decode()


def parse_edit(text: str) -> dict[str, Any]:
    """``key=value ...`` (values are JSON when they parse; ``a.b=1`` nests; ``key=null``
    deletes) into a desired patch."""
    pairs = text.split()
    if not pairs:
        raise EditError("type key=value pairs, e.g. led_is_on=true telemetry_interval_s=30")
    col = 1
    for pair in pairs:
        col = text.index(pair, col - 1) + 1
        key, sep, _raw = pair.partition("=")
        if not sep or not key:
            raise EditError(f"expected key=value, got {pair!r}", col)
        col += len(pair)
    try:
        return parse_assignments(pairs)
    except ValueError as err:
        raise EditError(str(err)) from None


def plan_edit(
    thing: str,
    name: str,
    text: str,
    document: ShadowDocument | None,
    firmware_version: str | None,
    understood_keys: Sequence[str] | None,
) -> DesiredEdit:
    """The edit ``text`` against ``document``: the diff it makes to desired state and the
    capability warnings (``understood_keys`` is the release manifest's list for the
    device's firmware, None when the manifest has no such release)."""
    patch = parse_edit(text)
    current = document or ShadowDocument.empty()
    try:  # the service applies the same semantics; refusing here loses nothing
        result = current.apply_update({"state": {"desired": patch}}, 0)
    except ShadowError as err:
        raise EditError(f"{err.code}: {err.message}") from None
    before = dict(flatten(current.desired))
    after = dict(flatten(result.document.desired))
    rows = [
        DiffRow(key, before.get(key, MISSING), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, MISSING) != after.get(key, MISSING)
    ]
    warnings: list[str] = []
    if not rows:
        warnings.append("no change: desired state already has these values")
    if name == "":  # the manifest describes the classic shadow's desired keys
        set_keys = [k for k, v in patch.items() if v is not None]
        if understood_keys is None:
            warnings.append(
                f"firmware {firmware_version or '?'} is not in the release manifest: "
                "cannot tell which keys it understands")
        else:
            for key in set_keys:
                if key not in understood_keys:
                    warnings.append(
                        f"firmware {firmware_version} does not understand {key!r}: the device "
                        "will not converge on it")
    return DesiredEdit(thing, name, patch, document.version if document else None, rows,
                       warnings)


def describe_row(row: DiffRow) -> tuple[str, str, str]:
    """(key, before, after) as shown in the preview."""
    before = "(unset)" if row.before is MISSING else show_value(row.before)
    after = "(deleted)" if row.after is None else show_value(row.after)
    return row.key, before, after
