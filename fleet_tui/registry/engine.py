"""Engine creation for SQLite (default) and PostgreSQL, with the pragmas the registry needs."""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

# A connection execution option: this transaction will write (see write_transaction).
WRITE_OPTION = "fleet_write"
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another


def create_registry_engine(url: str) -> Engine:
    """Create an engine; SQLite files get WAL and their parent directory is created."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
    engine = sa.create_engine(url, json_serializer=json_serializer, **kwargs)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def json_serializer(value: Any) -> str:
    """JSON columns' serializer: ``bytes`` are JSON serialized already (the shadow service
    serializes documents with orjson on its own thread); anything else as SQLAlchemy would."""
    if isinstance(value, bytes):
        return value.decode()
    return json.dumps(value)


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


@contextmanager
def sqlite_writer(engine: Engine) -> Iterator[None]:
    """This process's writers to one SQLite database take turns on a lock of their own
    before BEGIN IMMEDIATE. SQLite's busy handler polls, sleeping up to 100 ms between
    tries, and a writer that commits and begins again soon (the engine's tick, the shadow
    commits, in a fan-out) wins again and again: a writer waiting out 300 ms transactions
    began a median 291 ms (at worst 774 ms) after the lock came free; with this lock, 0.6 ms
    (measured with two threads, the one that waits and one that holds 300 ms then 20 ms
    off). Other processes still wait in SQLite's busy timeout. No-op elsewhere."""
    if engine.dialect.name != "sqlite":
        yield
        return
    with _WRITERS_LOCK:
        lock = _WRITERS.setdefault(engine, threading.RLock())
    # As long as SQLite's own busy timeout would have waited (connect_args above).
    if not lock.acquire(timeout=BUSY_TIMEOUT_S):
        raise TimeoutError(f"another writer of this process held the registry for "
                           f"{BUSY_TIMEOUT_S:g} s")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` for a transaction that writes. On SQLite it takes the write lock
    at BEGIN (BEGIN IMMEDIATE, waiting out busy_timeout for another writer): a deferred
    transaction that reads first holds a snapshot, and when another writer commits before
    its first write, SQLite refuses the upgrade at once with "database is locked", whatever
    the busy timeout."""
    with sqlite_writer(engine), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


def _sqlite_begin(conn: Connection) -> None:
    # Python's sqlite3 module starts transactions lazily and lets DDL run outside them, so
    # a failed import could keep its dropped indexes. Driving BEGIN ourselves makes every
    # SQLAlchemy transaction (and savepoint) a real SQLite one.
    immediate = conn.get_execution_options().get(WRITE_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # see _sqlite_begin
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL is durable against process crashes (kill -9); only power loss can
    # lose the last transactions.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # LIKE must be case-sensitive like PostgreSQL's, so globs mean the same on both.
    cur.execute("PRAGMA case_sensitive_like=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-131072")  # 128 MiB: index builds on large imports
    cur.close()
