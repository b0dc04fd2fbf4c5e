"""Errors the registry raises for bad input (never a traceback for the user's mistakes)."""

from __future__ import annotations


class RegistryError(ValueError):
    """A request the registry refuses: unknown group, cycle, duplicate, bad value."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class FleetImportError(RegistryError):
    """A bad import file: names the file, the row (1-based) and the field."""

    def __init__(self, file: str, row: int | None, field: str | None, message: str) -> None:
        where = file if row is None else f"{file}:{row}"
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")
        self.file, self.row, self.field = file, row, field
