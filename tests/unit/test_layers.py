"""The layer rule, checked on every import statement (function-level ones included), so it
cannot rot: domain imports nothing of ours; the console never imports SQL or MQTT libraries
or the registry's SQL internals (STYLE.md: harlequin's import contracts)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fleet_tui"
TUI_FORBIDDEN = ("sqlalchemy", "sqlmodel", "aiomqtt", "paho", "psycopg", "sqlite3", "alembic",
                 "fleet_tui.registry.models", "fleet_tui.registry.engine",
                 "fleet_tui.registry.migrate", "fleet_tui.registry.migrations",
                 "fleet_tui.service.mqtt", "fleet_tui.sim.mqtt_lite")


def imported_modules(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` (of ``module``)."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from fleet_tui.registry import models`
                yield node.lineno, f"{base}.{alias.name}"


def violations(layer: str, forbidden: Iterator[str] | tuple[str, ...],
               allowed_own: str | None = None) -> list[str]:
    found = []
    rules = tuple(forbidden)
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        module = "fleet_tui." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for line, name in imported_modules(path.read_text(), module):
            bad = any(name == r or name.startswith(r + ".") for r in rules)
            if allowed_own is not None:
                bad = name.startswith("fleet_tui") and not name.startswith(allowed_own)
            if bad:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return found


def test_the_console_never_imports_sql_or_mqtt_libraries() -> None:
    assert violations("tui", TUI_FORBIDDEN) == []


def test_domain_imports_nothing_of_ours() -> None:
    assert violations("domain", (), allowed_own="fleet_tui.domain") == []


@pytest.mark.parametrize("source", [
    "import sqlalchemy as sa",
    "from sqlalchemy import select",
    "def f():\n    import aiomqtt\n",
    "from fleet_tui.registry import models",
    "from ..registry.engine import make_engine",
])
def test_the_checker_sees_every_form_of_import(source: str) -> None:
    names = [n for _, n in imported_modules(source, "fleet_tui.tui.screens")]
    assert any(n == r or n.startswith(r + ".") for n in names for r in TUI_FORBIDDEN), names
