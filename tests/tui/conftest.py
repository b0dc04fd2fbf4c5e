"""Console fixtures: a seeded SQLite registry (imported once per session, copied per test)
and an app factory with a fixed clock and no service."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet_tui.config import Settings
from fleet_tui.domain.shadow import ShadowDocument
from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import Registry
from fleet_tui.tui.app import FleetApp
from tests.conftest import SAMPLE_DATA

CLOCK = 1_700_000_000.0
CONVERGING_DEVICE = "esp32-000001"
IN_SYNC_DEVICE = "esp32-000002"
ONLINE = [f"esp32-{i:06d}" for i in range(1, 41)]
UNHEALTHY = ["esp32-000003", "esp32-000007"]


def fixed_clock() -> float:
    return CLOCK


def _shadow(desired: dict[str, object], reported: dict[str, object], version: int) -> dict:
    doc = ShadowDocument.from_dict({"state": {"desired": desired, "reported": reported},
                                    "version": version, "timestamp": int(CLOCK)})
    return doc.to_dict() | {"exists": True}


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tui") / "seed.db"
    registry = Registry.open(f"sqlite:///{path}")
    try:
        import_fleet(registry, SAMPLE_DATA)
        registry.set_presence([(d, True, CLOCK - 30 * i) for i, d in enumerate(ONLINE)])
        registry.set_health([(d, "healthy", None) for d in ONLINE])
        registry.set_health([(d, "unhealthy", None) for d in UNHEALTHY])
        registry.save_shadows([
            (CONVERGING_DEVICE, "", 7, _shadow(
                {"led_is_on": True, "telemetry_interval_s": 30},
                {"led_is_on": False, "telemetry_interval_s": 30, "firmware_version": "2.1.2",
                 "ota_status": "idle"}, 7)),
            (IN_SYNC_DEVICE, "", 3, _shadow(
                {"led_is_on": True},
                {"led_is_on": True, "firmware_version": "2.2.0"}, 3)),
        ])
    finally:
        registry.close()
    return path


@pytest.fixture
def registry(seeded_db: Path, tmp_path: Path) -> Iterator[Registry]:
    path = tmp_path / "registry.db"
    shutil.copy(seeded_db, path)
    reg = Registry.open(f"sqlite:///{path}")
    try:
        yield reg
    finally:
        reg.close()


AppFactory = Callable[..., FleetApp]


@pytest.fixture
def make_app(registry: Registry) -> AppFactory:
    def make(read_only: bool = False, **kwargs: object) -> FleetApp:
        settings = Settings(db="sqlite://", read_only=read_only)
        app = FleetApp(settings, registry, clock=fixed_clock, **kwargs)  # type: ignore[arg-type]
        app.animation_level = "none"
        return app

    return make
