"""Shared fixtures: registries on real SQLite and real PostgreSQL, a real mosquitto."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fleet_tui.registry.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"
PG_ADMIN_URL = os.environ.get(
    "FLEET_TUI_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _pg_available() -> bool:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


PG_AVAILABLE = _pg_available()


def _require_pg() -> None:
    if not PG_AVAILABLE:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL ({PG_ADMIN_URL}, FLEET_TUI_TEST_PG) is required in CI")
        pytest.skip("PostgreSQL not reachable")


def _admin() -> sa.Engine:
    global _ADMIN
    if _ADMIN is None:
        _ADMIN = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                                  poolclass=sa.pool.NullPool)
    return _ADMIN


_ADMIN: sa.Engine | None = None


def pg_database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def _pg_database(template: str = "template0", prefix: str = "fleet_test") -> Iterator[str]:
    """A new database copied from ``template`` (no session may be connected to it), dropped
    afterwards whoever is still connected. Its name carries this process's id, so a later
    run can tell it was left behind (see _drop_stale_databases)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with _admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield pg_database_url(name)
    finally:
        with _admin().connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _drop_stale_databases() -> None:
    """Databases of test processes that died (kill -9, a timeout) before their teardown."""
    with _admin().connect() as conn:
        names = conn.execute(sa.text(
            "SELECT datname FROM pg_database WHERE datname LIKE 'fleet\\_test\\_%' "
            "OR datname LIKE 'fleet\\_tmpl\\_%'")).scalars()
        for name in list(names):
            pid = name.rsplit("_", 2)[-2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def pg_template_of(seed: Callable[[Registry], None] | None = None,
                   template: str = "template0") -> Iterator[str]:
    """A migrated (and ``seed``-ed) database to copy, named after this xdist worker and
    process so parallel runs and checkouts never share one. Yields its name."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with _pg_database(template, f"fleet_tmpl_{worker}") as url:
        reg = Registry.open(url)  # the migrations, once
        try:
            if seed is not None:
                seed(reg)
        finally:
            reg.close()  # dispose: CREATE DATABASE ... TEMPLATE needs it unconnected
        yield str(sa.make_url(url).database)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The registry's schema, migrated once per xdist worker: each test's database is a
    copy of it, one CREATE DATABASE instead of every migration (0.07 against 0.18 s on an
    idle machine, and no Alembic run in the test)."""
    _require_pg()
    _drop_stale_databases()
    with pg_template_of() as name:
        yield name


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    with _pg_database(pg_template) as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url(pg_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database shared by one module's tests."""
    with _pg_database(pg_template) as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh registry URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """One registry URL per module and backend, for modules that seed expensive state once."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('module-db') / 'registry.db'}"
    return str(request.getfixturevalue("module_pg_url"))


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A registry URL with no schema at all (the migrations' own tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    _require_pg()
    with _pg_database() as url:
        yield url


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    reg = Registry.open(db_url)
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def sample_registry(registry: Registry) -> Registry:
    from fleet_tui.registry.importer import import_fleet

    import_fleet(registry, SAMPLE_DATA)
    return registry
