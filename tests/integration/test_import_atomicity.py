"""A bulk import is one transaction: stopped anywhere, by an error or kill -9, the registry
is as it was (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fleet_tui.registry.errors import Conflict
from fleet_tui.registry.registry import NewDevice, Registry

ROOT = Path(__file__).resolve().parents[2]


def _fleet(prefix: str, n: int, start: int = 0) -> Iterator[NewDevice]:
    for i in range(start, start + n):
        yield NewDevice(f"{prefix}-{i:06d}", "rev-a", "2.1.0",
                        {"line": f"l{i % 3}", "ring": "general"},
                        {"tags": {"location": f"factory-{i % 4}"}, "n": i % 7})


def _state(registry: Registry) -> tuple[list[str], list[tuple[object, ...]], set[str]]:
    with registry.engine.connect() as conn:
        tags = conn.execute(sa.text("SELECT device_id, source, key, value, num, vkey FROM tag "
                                    "ORDER BY device_id, source, key")).all()
    indexes = {i["name"] for t in ("device", "tag")
               for i in sa.inspect(registry.engine).get_indexes(t)}
    return registry.device_ids(), [tuple(t) for t in tags], indexes


@pytest.fixture
def seeded(registry: Registry) -> Registry:
    registry.add_devices(_fleet("kept", 30))
    registry.create_group("l1", query='tag.line = "l1"')
    return registry


def test_an_import_failing_after_many_batches_keeps_nothing(seeded: Registry) -> None:
    before = _state(seeded)

    def devices() -> Iterator[NewDevice]:
        yield from _fleet("new", 4500)
        yield NewDevice("kept-000007")  # registered already; 45 batches written before it

    with (pytest.raises(Conflict, match="'kept-000007' already exists"),
          seeded.transaction(bulk_load=True) as conn):
        seeded.add_devices(devices(), conn=conn, batch=100)
    assert _state(seeded) == before
    # The same pooled connection imports again (its temporary profile tables are gone).
    assert seeded.add_devices(_fleet("new", 500)) == 500
    assert seeded.count_devices(group="l1") == 10 + 167


def test_a_batch_naming_a_device_twice_is_refused_and_keeps_nothing(seeded: Registry) -> None:
    before = _state(seeded)
    twice = [*_fleet("new", 60), NewDevice("new-000042", "rev-a")]  # in the same batch
    with pytest.raises(Conflict, match="'new-000042' already exists"):
        seeded.add_devices(twice, batch=100)
    assert _state(seeded) == before


def test_an_import_whose_reader_raises_midway_keeps_nothing(seeded: Registry) -> None:
    before = _state(seeded)

    def devices() -> Iterator[NewDevice]:
        yield from _fleet("new", 2500)
        raise ValueError("the file ended badly")

    with (pytest.raises(ValueError, match="ended badly"),
          seeded.transaction(bulk_load=True) as conn):
        seeded.add_devices(devices(), conn=conn, batch=200)
    assert _state(seeded) == before


_KILLED_IMPORT = textwrap.dedent("""
    import sys, time
    import sqlalchemy as sa
    from fleet_tui.registry.registry import Registry
    from tests.integration.test_import_atomicity import _fleet

    registry = Registry.open(sys.argv[1])
    if registry.dialect == "sqlite":
        # A small page cache: the import's pages spill into the WAL before any commit, so
        # the kill leaves a torn transaction there for recovery to ignore.
        sa.event.listen(registry.engine, "connect",
                        lambda conn, _: conn.execute("PRAGMA cache_size=64"))
        registry.engine.dispose()

    def devices():
        yield from _fleet("new", 20000)
        print("halfway", flush=True)
        time.sleep(120)  # killed here, mid-transaction
        yield from _fleet("new", 20000, start=20000)

    with registry.transaction(bulk_load=True) as conn:
        registry.add_devices(devices(), conn=conn, batch=2000)
    print("committed", flush=True)
""")


def test_an_import_killed_midway_leaves_the_registry_as_it_was(
        seeded: Registry, db_url: str) -> None:
    before = _state(seeded)
    seeded.close()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_IMPORT, db_url], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "halfway"
        if db_url.startswith("sqlite"):
            wal = Path(db_url.removeprefix("sqlite:///") + "-wal")
            assert wal.stat().st_size > 1_000_000  # 20k devices' pages written, uncommitted
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    registry = Registry.open(db_url)
    try:
        assert _state(registry) == before
        if registry.dialect == "sqlite":
            with registry.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert registry.add_devices(_fleet("new", 3000)) == 3000
        assert registry.count_devices() == 3030
    finally:
        registry.close()
