"""`fleet-tui shadow get|set` and `devices health` against the running service (on SQLite
and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from fleet_tui.cli import main
from fleet_tui.registry.registry import NewDevice, Registry
from fleet_tui.service.client import parse_assignments
from fleet_tui.service.topics import Topics
from tests.integration.mosquitto import Mosquitto
from tests.integration.service_harness import peer, running_service, settings_for

T = Topics()


def test_parse_assignments_nests_and_types_values() -> None:
    assert parse_assignments(["led_is_on=true", "telemetry_interval_s=30", "cfg.mode=eco",
                              "note=hello world", "gone=null"]) == {
        "led_is_on": True, "telemetry_interval_s": 30, "cfg": {"mode": "eco"},
        "note": "hello world", "gone": None}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_assignments(["oops"])


async def test_shadow_set_and_get_via_the_cli(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], db_url: str,
) -> None:
    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    db = db_url
    registry = Registry.open(db)
    settings = settings_for(mosquitto.url, db)
    base = ["--db", db, "--broker", mosquitto.url]
    async with running_service(settings, registry), \
            peer(mosquitto.url, [T.shadow("dev-1", "", "update", "delta")]) as dev:
        code = await asyncio.to_thread(
            main, [*base, "shadow", "set", "dev-1", "led_is_on=true", "telemetry_interval_s=30"])
        out = capsys.readouterr().out
        assert code == 0 and json.loads(out)["version"] == 1
        _, delta = await dev.wait_for(lambda t, p: True)
        assert delta["state"] == {"led_is_on": True, "telemetry_interval_s": 30}
        code = await asyncio.to_thread(main, [*base, "shadow", "get", "dev-1"])
        got = json.loads(capsys.readouterr().out)
        assert got["state"]["desired"]["led_is_on"] is True and got["state"]["delta"]
        # A stale version is refused with AWS's 409, as a clean CLI error.
        code = await asyncio.to_thread(
            main, [*base, "shadow", "set", "dev-1", "led_is_on=false", "--version", "7"])
        err = capsys.readouterr().err
        assert code == 2 and "409" in err and "Traceback" not in err
    # No service: a clear error, not a hang.
    code = await asyncio.to_thread(main, [*base, "shadow", "get", "dev-1", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "is `fleet-tui serve` running?" in err
    code = await asyncio.to_thread(main, ["--db", db, "--broker", mosquitto.url, "shadow",
                                          "get", "bad name!"])
    assert code == 2 and "invalid thing name" in capsys.readouterr().err


async def test_devices_health_reports_counts_and_anomalies(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], db_url: str,
) -> None:
    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    db = db_url
    registry = Registry.open(db)
    registry.add_devices([NewDevice(f"d{i}", tags={"site": "x"}) for i in range(12)])
    registry.create_group("site-x", query='tag.site = "x"')
    settings = settings_for(mosquitto.url, db)
    async with running_service(settings, registry) as svc, peer(mosquitto.url, []) as dev:
        for i in range(12):
            temp = 95.0 if i == 3 else 40.0 + (i % 3) * 0.5
            await dev.publish(T.telemetry(f"d{i}"), {
                "ts": time.time(), "uptime_s": 1000, "heap_free": 180000, "rssi": -60,
                "cpu_pct": 20.0, "temp_c": temp, "reset_reason": "poweron", "errors": 0})
        while len(svc.telemetry.latest) < 12:
            await asyncio.sleep(0.05)
    code = main(["--db", db, "devices", "health", "-g", "site-x", "-o", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["summary"]["online"] == 12 and report["summary"]["unhealthy"] == 1
    flagged = {(a["device_id"], a["metric"], a["method"]) for a in report["anomalies"]}
    assert ("d3", "temp_c", "mad") in flagged
    assert report["unhealthy"][0]["device_id"] == "d3"
    main(["--db", db, "devices", "health", "-g", "site-x"])
    assert "anomaly  d3" in capsys.readouterr().out
