"""No SQL is built from strings anywhere in fleet_tui/: every statement is SQLAlchemy Core
(or a constant), values go in as bound parameters.

Fails on (a) a call to ``execute``/``exec_driver_sql``/``text`` whose statement is an
f-string, ``%``/``+`` concatenation or ``.format()``, and (b) any f-string, ``%`` or
``.format()`` template that reads like SQL (``SELECT ... FROM``, ``INSERT INTO``,
``UPDATE ... SET``, ``DELETE FROM``, ``WHERE``). A reviewed exception carries
``# sql-reviewed: <why>`` on the line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fleet_tui"
SQL = re.compile(r"\bSELECT\s.+\sFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b"
                 r"|\bDELETE\s+FROM\b|\bWHERE\s+[\w.\"]+\s*(=|<|>|!=|\bIN\b|\bLIKE\b|\bIS\b)",
                 re.IGNORECASE | re.DOTALL)
SQL_CALLS = {"execute", "exec_driver_sql", "text", "executescript", "executemany"}
MARK = "sql-reviewed:"


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def _literal_text(node: ast.expr) -> str:
    """The constant parts of a string-building expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(v) for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) + " " + _literal_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _literal_text(node.func.value)
    return ""


def _is_built(node: ast.expr) -> bool:
    """An f-string with placeholders, ``%``/``+`` on strings, or ``"...".format(...)``."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return bool(_literal_text(node)) or _is_built(node.left) or _is_built(node.right)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def findings(source: str, name: str = "<src>") -> list[str]:
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[str] = []

    def report(node: ast.AST, why: str) -> None:
        line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
        if MARK not in line:
            out.append(f"{name}:{node.lineno}: {why}: {line.strip()}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in SQL_CALLS and _is_built(node.args[0]):
                report(node, f"SQL statement built from a string passed to {called}()")
                continue
        if isinstance(node, ast.expr) and _is_built(node) and SQL.search(_literal_text(node)):
            report(node, "string template that reads like SQL")
    return sorted(set(out))


def test_no_sql_is_built_from_strings_in_the_package() -> None:
    assert len(_sources()) > 30  # the walk really sees the package
    problems = [f for path in _sources()
                for f in findings(path.read_text(encoding="utf-8"),
                                  str(path.relative_to(PACKAGE.parent)))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("code", [
    'conn.execute(f"SELECT * FROM device WHERE id = \'{x}\'")',
    'conn.execute(sa.text("DELETE FROM tag WHERE key = \'%s\'" % key))',
    'cur.execute("UPDATE device SET x = 1 WHERE id = " + device_id)',
    'conn.exec_driver_sql("INSERT INTO t VALUES ({})".format(v))',
    'q = f"select id from device where {clause}"',
])
def test_the_check_catches_string_built_sql(code: str) -> None:
    assert findings(code)


@pytest.mark.parametrize("code", [
    'conn.execute(sa.select(DEVICE).where(DEVICE.c.id == device_id))',
    'conn.execute(sa.text("SELECT 1"))',
    'cur.execute("PRAGMA journal_mode=WAL")',
    'msg = f"no device {device_id!r} where expected"',  # prose, not SQL
    'conn.execute(f"VACUUM {name}")  # sql-reviewed: name is a fixed identifier',
])
def test_the_check_passes_parameterized_or_reviewed_code(code: str) -> None:
    assert not findings(code)
