"""Console fixtures: a seeded SQLite registry (imported once per session, copied per test),
the same seed on PostgreSQL (a per-session template, copied per test) and an app factory
with a fixed clock and no service."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Input

from fleet_tui.config import Settings
from fleet_tui.domain.shadow import ShadowDocument
from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import Registry
from fleet_tui.tui.app import FleetApp
from tests.conftest import BACKENDS, SAMPLE_DATA, _pg_database, pg_template_of


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A focused input's cursor stays shown instead of blinking every 0.5 s: a snapshot
    taken more than half a second after the last key (a slow machine) caught it off, and
    one frame in a run differed from the stored snapshot."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


CLOCK = 1_700_000_000.0
CONVERGING_DEVICE = "esp32-000001"
IN_SYNC_DEVICE = "esp32-000002"
ONLINE = [f"esp32-{i:06d}" for i in range(1, 41)]
UNHEALTHY = ["esp32-000003", "esp32-000007"]
GONE_DARK = "esp32-000099"  # online by presence, silent for 15 minutes
OLD_FIRMWARE_DEVICE = "esp32-000003"  # 2.0.4: its manifest has no telemetry_interval_s


def fixed_clock() -> float:
    return CLOCK


def _shadow(desired: dict[str, object], reported: dict[str, object], version: int) -> dict:
    doc = ShadowDocument.from_dict({"state": {"desired": desired, "reported": reported},
                                    "version": version, "timestamp": int(CLOCK)})
    return doc.to_dict() | {"exists": True}


def _telemetry(i: int, **override: float) -> dict[str, object]:
    """A latest-telemetry record as the service stores it (deterministic in ``i``)."""
    record: dict[str, object] = {
        "ts": CLOCK - 20, "uptime_s": 3600 + i, "heap_free": 150_000 + 500 * (i % 7),
        "rssi": -60 - i % 5, "cpu_pct": 10.0 + i % 4, "temp_c": 40.0 + (i % 6) * 0.5,
        "reset_reason": "poweron", "errors": 0, "received": CLOCK - 20, "reasons": []}
    record.update(override)
    return record


def _buckets() -> list[dict[str, object]]:
    """An hour of minute buckets (and a day of hour buckets) for the first devices."""
    rows: list[dict[str, object]] = []
    values = {"heap_free": lambda k: 160_000 - 300 * k, "rssi": lambda k: -60 - (k % 9),
              "cpu_pct": lambda k: 10 + (k * 7) % 30, "temp_c": lambda k: 40 + (k % 12),
              "errors": lambda k: k % 3}
    for device in ONLINE[:4]:
        for width, n in ((60, 60), (3600, 24)):
            for k in range(n):
                start = int(CLOCK // width * width - (n - 1 - k) * width)
                for metric, f in values.items():
                    v = float(f(k))
                    rows.append({"device_id": device, "metric": metric, "width": width,
                                 "start": start, "count": 2, "total": 2 * v, "min": v,
                                 "max": v, "last": v})
    return rows


def seed_console(registry: Registry) -> None:
    """The sample fleet with presence, health, metric buckets and shadows at CLOCK."""
    import_fleet(registry, SAMPLE_DATA)
    registry.set_presence([(d, True, CLOCK - 3 * i) for i, d in enumerate(ONLINE)])
    registry.set_health([(d, "healthy", _telemetry(i)) for i, d in enumerate(ONLINE)])
    registry.set_health([(d, "unhealthy", _telemetry(3, temp_c=118.0 + i))
                         for i, d in enumerate(UNHEALTHY)])
    registry.set_presence([(GONE_DARK, True, CLOCK - 900)])
    registry.set_health([(GONE_DARK, "healthy", _telemetry(5))])
    registry.save_metric_buckets(_buckets())
    registry.save_shadows([
        (CONVERGING_DEVICE, "config", 2, _shadow({"sample_rate_hz": 10},
                                                 {"sample_rate_hz": 10}, 2)),
        (CONVERGING_DEVICE, "", 7, _shadow(
            {"led_is_on": True, "telemetry_interval_s": 30},
            {"led_is_on": False, "telemetry_interval_s": 30, "firmware_version": "2.1.2",
             "ota_status": "idle"}, 7)),
        (IN_SYNC_DEVICE, "", 3, _shadow(
            {"led_is_on": True},
            {"led_is_on": True, "firmware_version": "2.2.0"}, 3)),
    ])


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tui") / "seed.db"
    registry = Registry.open(f"sqlite:///{path}")
    try:
        seed_console(registry)
    finally:
        registry.close()
    return path


@pytest.fixture(scope="session")
def seeded_pg_template(pg_template: str) -> Iterator[str]:
    """The same seed in PostgreSQL, once per session and xdist worker, to copy per test."""
    with pg_template_of(seed_console, template=pg_template) as name:
        yield name


def _open(url: str) -> Iterator[Registry]:
    reg = Registry.open(url)
    try:
        yield reg
    finally:
        reg.close()


def _sqlite_copy(seeded_db: Path, tmp_path: Path) -> Iterator[Registry]:
    path = tmp_path / "registry.db"
    shutil.copy(seeded_db, path)
    yield from _open(f"sqlite:///{path}")


@pytest.fixture
def registry(seeded_db: Path, tmp_path: Path) -> Iterator[Registry]:
    yield from _sqlite_copy(seeded_db, tmp_path)


@pytest.fixture(params=BACKENDS)
def seeded_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """The seeded registry once on SQLite and once on PostgreSQL (a copy of the seeded
    template). The console's live and role tests use it; the snapshots stay on SQLite."""
    if request.param == "sqlite":
        yield from _sqlite_copy(request.getfixturevalue("seeded_db"), tmp_path)
        return
    with _pg_database(request.getfixturevalue("seeded_pg_template")) as url:
        yield from _open(url)


@pytest.fixture
def empty_registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        yield reg
    finally:
        reg.close()


AppFactory = Callable[..., FleetApp]


@pytest.fixture
def make_app(registry: Registry) -> AppFactory:
    def make(read_only: bool = False, keymap: dict[str, str] | None = None,
             on: Registry | None = None, **kwargs: object) -> FleetApp:
        settings = Settings(db="sqlite://", read_only=read_only, keymap=keymap or {})
        app = FleetApp(settings, on or registry, clock=fixed_clock,
                       **kwargs)  # type: ignore[arg-type]
        app.animation_level = "none"
        return app

    return make
