"""Import a fleet (devices.jsonl, groups.json, releases.json) in one transaction.

A bad row names the file, the row and the field; nothing from the import is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fleet_tui.domain.query import GroupQuery, QuerySyntaxError
from fleet_tui.domain.version import VersionError, parse_version
from fleet_tui.registry.errors import FleetImportError, RegistryError
from fleet_tui.registry.registry import NewDevice, Registry, ReleaseInfo

# AWS IoT thing names: letters, digits, ':', '_', '-', 1-128 characters.
THING_NAME = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
DEVICE_FIELDS = {"id", "hardware_rev", "firmware_version", "tags", "reported"}
FILES = ("devices.jsonl", "groups.json", "releases.json")


@dataclass
class ImportReport:
    devices: int = 0
    groups: int = 0
    releases: int = 0

    def __str__(self) -> str:
        return (f"imported {self.devices} devices, {self.groups} groups, "
                f"{self.releases} releases")


class _DeviceValidator:
    """Checks device rows; values a fleet repeats (versions, tag keys) are checked once.

    A million-device import spends most of its Python time here, so the checks that pass
    are remembered and the dict work is kept to what a row needs.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.good_versions: set[str] = set()
        self.good_keys: set[str] = set()

    def fail(self, row: int, fieldname: str | None, msg: str) -> FleetImportError:
        return FleetImportError(self.file, row, fieldname, msg)

    def device(self, row: int, data: Any) -> NewDevice:
        if not isinstance(data, dict):
            raise self.fail(row, None, "expected a JSON object")
        if not data.keys() <= DEVICE_FIELDS:
            expected = ", ".join(sorted(DEVICE_FIELDS))
            unknown = sorted(set(data) - DEVICE_FIELDS)[0]
            raise self.fail(row, unknown, f"unknown field (expected {expected})")
        dev_id = data.get("id")
        if not isinstance(dev_id, str) or not THING_NAME.fullmatch(dev_id):
            raise self.fail(row, "id",
                            f"{dev_id!r} is not a valid thing name ([A-Za-z0-9:_-], 1-128)")
        fw = data.get("firmware_version")
        if fw is not None and fw not in self.good_versions:
            if not isinstance(fw, str):
                raise self.fail(row, "firmware_version", f"expected a string, got {fw!r}")
            try:
                parse_version(fw)
            except VersionError as err:
                raise self.fail(row, "firmware_version", str(err)) from None
            self.good_versions.add(fw)
        hw = data.get("hardware_rev")
        if hw is not None and (not isinstance(hw, str) or not 0 < len(hw) <= 64):
            raise self.fail(row, "hardware_rev",
                            f"expected a string of 1-64 characters, got {hw!r}")
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise self.fail(row, "tags", "expected an object of key: string")
        for key, value in tags.items():
            if key not in self.good_keys:
                if not TAG_KEY.fullmatch(key):
                    raise self.fail(row, f"tags.{key}",
                                    "tag keys are letters, digits, '_', '.', '-'")
                self.good_keys.add(key)
            if value.__class__ is not str or len(value) > 512:
                raise self.fail(row, f"tags.{key}",
                                f"expected a string of at most 512 characters, got {value!r}")
        reported = data.get("reported") or {}
        if not isinstance(reported, dict):
            raise self.fail(row, "reported", "expected an object")
        return NewDevice(dev_id, hw, fw, tags, reported)


def read_devices(path: Path) -> Iterator[NewDevice]:
    seen: set[str] = set()
    check = _DeviceValidator(str(path))
    with path.open("rb") as fh:
        for row, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise FleetImportError(str(path), row, None, f"invalid JSON: {err}") from None
            dev = check.device(row, data)
            if dev.id in seen:
                raise FleetImportError(str(path), row, "id", f"duplicate device id {dev.id!r}")
            seen.add(dev.id)
            yield dev


def _load_json_list(path: Path) -> list[Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as err:
        raise FleetImportError(str(path), None, None, f"invalid JSON: {err}") from None
    if not isinstance(data, list):
        raise FleetImportError(str(path), None, None, "expected a JSON array")
    return data


def _ordered_groups(path: Path, items: list[Any]) -> list[tuple[int, dict[str, Any]]]:
    """Groups with parents before children; a cycle or unknown parent is an error."""
    by_name: dict[str, tuple[int, dict[str, Any]]] = {}
    for row, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise FleetImportError(str(path), row, "name", "each group needs a string name")
        if item["name"] in by_name:
            raise FleetImportError(str(path), row, "name", f"duplicate group {item['name']!r}")
        by_name[item["name"]] = (row, item)
    ordered: list[tuple[int, dict[str, Any]]] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        row, item = by_name[name]
        if state.get(name) == 1:
            cycle = " -> ".join([*chain, name])
            raise FleetImportError(str(path), row, "parent", f"cyclic group hierarchy: {cycle}")
        state[name] = 1
        parent = item.get("parent")
        if parent is not None and parent in by_name:
            visit(parent, [*chain, name])
        state[name] = 2
        ordered.append((row, item))

    for name in by_name:
        visit(name, [])
    return ordered


def import_fleet(registry: Registry, path: Path) -> ImportReport:
    """Import a fleet directory, or one of its files, in a single transaction."""
    path = Path(path)
    if path.is_dir():
        files = [path / f for f in FILES if (path / f).exists()]
        if not files:
            raise RegistryError(f"{path}: no {', '.join(FILES)} found")
    elif path.exists():
        files = [path]
    else:
        raise RegistryError(f"{path}: no such file or directory")
    report = ImportReport()
    with registry.transaction(bulk_load=True) as conn:
        for file in files:
            if file.suffix == ".jsonl":
                try:
                    report.devices += registry.add_devices(read_devices(file), conn=conn)
                except RegistryError as err:
                    if isinstance(err, FleetImportError):
                        raise
                    raise FleetImportError(str(file), None, "id", str(err)) from None
            elif file.name.startswith("group"):
                report.groups += _import_groups(registry, file, conn)
            elif file.name.startswith("release"):
                report.releases += _import_releases(registry, file, conn)
            else:
                raise RegistryError(
                    f"{file}: unknown kind of file (expected {', '.join(FILES)})"
                )
    registry.invalidate_groups()
    return report


def _import_groups(registry: Registry, path: Path, conn: Any) -> int:
    items = _ordered_groups(path, _load_json_list(path))
    allowed = {"name", "kind", "query", "parent", "members", "description"}
    for row, item in items:
        extra = set(item) - allowed
        if extra:
            raise FleetImportError(str(path), row, sorted(extra)[0], "unknown field")
        query = item.get("query")
        if query is not None:
            try:
                GroupQuery.parse(query)
            except QuerySyntaxError as err:
                raise FleetImportError(str(path), row, "query", str(err)) from None
        try:
            registry.create_group(
                item["name"], kind=item.get("kind"), query=query, parent=item.get("parent"),
                members=item.get("members") or (), description=item.get("description", ""),
                conn=conn,
            )
        except RegistryError as err:
            raise FleetImportError(str(path), row, None, str(err)) from None
    return len(items)


def _import_releases(registry: Registry, path: Path, conn: Any) -> int:
    items = _load_json_list(path)
    for row, item in enumerate(items, 1):
        try:
            rel = ReleaseInfo(
                version=item["version"], url=item["url"], sha256=item["sha256"],
                size=int(item["size"]), hardware_revs=list(item["hardware_revs"]),
                desired_keys=list(item["desired_keys"]), notes=item.get("notes", ""),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise FleetImportError(str(path), row, str(err).strip("'"), "missing or invalid") \
                from None
        if not re.fullmatch(r"[0-9a-fA-F]{64}", rel.sha256):
            raise FleetImportError(str(path), row, "sha256", "expected 64 hex digits")
        try:
            registry.add_release(rel, conn)
        except RegistryError as err:
            raise FleetImportError(str(path), row, "version", str(err)) from None
    return len(items)
