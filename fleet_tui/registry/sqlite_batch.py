"""Batched SQLite statements that run as one step each.

Python's sqlite3 module lets go of the GIL around every ``sqlite3_step``: once per row of
an ``executemany``, once per row fetched. The registry's writers run in threads beside the
service's busy event loop, and a thread that let go of the GIL waits for the loop to hand
it back (up to the 5 ms switch interval) each time. Measured on 5,000 rows with a busy main
thread: an ``executemany`` UPDATE took 9.4 s (11 ms when idle), ``UPDATE ... RETURNING``
420 ms, the same UPDATE over one JSON array parameter unpacked by ``json_each`` 35 ms. So
batches go in as one JSON array (:func:`json_rows`, :func:`json_values`) and many rows come
back as one JSON array (:func:`fetch_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression


def json_rows(*names: str, param: str = "rows") -> sa.Select[Any]:
    """The rows of the JSON array parameter ``param`` (each an array of column values),
    as columns ``names``."""
    rows = sa.func.json_each(sa.bindparam(param, type_=sa.String)).table_valued("value")
    return sa.select(*(
        sa.func.json_extract(rows.c.value, sa.literal_column(f"'$[{i}]'")).label(name)
        for i, name in enumerate(names)
    )).select_from(rows).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT


def json_values(param: str) -> sa.Select[Any]:
    """The scalars of the JSON array parameter ``param``: for ``column.in_(...)``."""
    values = sa.func.json_each(sa.bindparam(param, type_=sa.String)).table_valued("value")
    return sa.select(values.c.value)


def unindexed(column: Any) -> Any:
    """``+column``: SQLite may not use an index on it. Without statistics the planner takes
    an index on (job_id, status) for a batch keyed by device, then scans the batch once per
    execution of the job (100k x 5,000): a term wrapped so leaves it the per-row probe."""
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def dumps(rows: Sequence[Any]) -> str:
    """A batch as the JSON text a ``json_rows``/``json_values`` parameter takes."""
    return orjson.dumps(rows).decode()


def fetch_rows(conn: Connection, stmt: sa.Select[Any], json_columns: Sequence[str] = (),
               params: dict[str, Any] | None = None) -> list[list[Any]]:
    """Every row of ``stmt``, fetched in one step as one JSON array (in no promised order:
    sort what needs one). Values come back as JSON has them: text, numbers, null;
    ``json_columns`` (stored JSON text) come back decoded."""
    sub = stmt.subquery()
    cols = [sa.func.json(c) if c.name in json_columns
            else _exact_real(c) if isinstance(c.type, sa.Float) else c for c in sub.c]
    text = conn.execute(sa.select(sa.func.json_group_array(sa.func.json_array(*cols)))
                        .select_from(sub), params or {}).scalar()
    return orjson.loads(text) if text else []


def _exact_real(column: Any) -> Any:
    """A REAL as a JSON number with all 17 digits: SQLite writes reals into JSON with 15,
    which cuts a timestamp's microseconds."""
    text = sa.func.printf(sa.literal_column("'%!.17g'"), column)  # !: past 16 digits
    return sa.case((column.is_(None), sa.null()), else_=sa.func.json(text))
