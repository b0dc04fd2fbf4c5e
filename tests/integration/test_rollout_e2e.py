"""Rollouts as an operator runs them: the CLI against `fleet-tui serve` and the simulator
on the sample fleet (SQLite), and one rollout onto the real firmware binary (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleet_tui.domain.jobs import JobSettings
from fleet_tui.domain.rollout import COMPLETED, Gates, WaveSpec
from fleet_tui.service.job_control import Actor
from fleet_tui.service.rollouts import plan_rollout, start_rollout
from tests.integration.devices import FIRMWARE_BINARY, DeviceProcess
from tests.integration.engine_rig import SAMPLE, engine_rig, firmware_server, fleet_rows
from tests.integration.mosquitto import Mosquitto

pytestmark = pytest.mark.slow
GROUP = "fra-1-l1"


@pytest.fixture
def base_url() -> Iterator[str]:
    with firmware_server() as url:
        yield url


class Cli:
    def __init__(self, tmp: Path, db: str, broker: str, base_url: str) -> None:
        self.config = tmp / "fleet.toml"
        self.config.write_text(
            f'db = "{db}"\nbroker = "{broker}"\noperator = "olga"\nrole = "approver"\n'
            f'[jobs]\ntick_s = 0.2\nlease_ttl_s = 3.0\nfirmware_base_url = "{base_url}"\n'
            '[shadow]\nflush_interval_ms = 10\n[health]\ntelemetry_interval_s = 1.0\n')
        self.env = {**os.environ, "FLEET_TUI_CONFIG": str(self.config)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = tmp

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, "-m", "fleet_tui.cli", *args], env=self.env,
                             capture_output=True, text=True, timeout=120)
        if ok:
            assert out.returncode == 0, out.stderr
        return out

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "fleet_tui.cli", *args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_cli_drives_a_rollout_end_to_end_on_the_sample_fleet(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str) -> None:
    # SQLite only: on PostgreSQL it is the suite's slowest test (25 s alone, 45 s in the
    # two-worker suite), and its parts run on PostgreSQL elsewhere: `fleet-tui serve` in
    # the jobs engine's kill -9 and the scale-out tests, rollouts in test_rollouts.py, the
    # drill by keyboard and the rollout onto the firmware binary below.
    cli = Cli(tmp_path, f"sqlite:///{tmp_path / 'fleet.db'}", mosquitto.url, base_url)
    try:
        cli.run("import", str(SAMPLE))
        members = json.loads(cli.run("devices", "list", "--group", GROUP, "--format", "json",
                                     "--limit", "1000").stdout)
        ids = {m["id"] for m in members}
        assert 10 <= len(ids) <= 200
        fleet_file = tmp_path / "group.jsonl"
        with (SAMPLE / "devices.jsonl").open("rb") as src, fleet_file.open("wb") as dst:
            for line in src:
                if orjson.loads(line)["id"] in ids:
                    dst.write(line)
        cli.start("serve", "serve")
        _wait(lambda: "holds the engine lease" in cli.log("serve"), 30, "serve")
        cli.start("sim", "sim", "--from-registry", str(fleet_file), "--telemetry-interval",
                  "1", "--boot-delay", "0.1", "--confirm-timeout", "5",
                  "--firmware-base-url", base_url)
        _wait(lambda: sum(m["online"] for m in json.loads(cli.run(
            "devices", "list", "--group", GROUP, "--format", "json", "--limit", "1000"
        ).stdout)) == len(ids), 60, "the group online")

        plan = cli.run("rollout", "plan", "--release", "2.4.1", "--group", GROUP,
                       "--waves", "10,100").stdout
        assert "wave 1 canary" in plan and "dry run" in plan
        refused = cli.run("rollout", "start", "--release", "2.4.1", "--group", GROUP,
                          "--confirm", "2.4.0", ok=False)
        assert refused.returncode == 2 and "type the release version 2.4.1" in refused.stderr
        started = cli.run("rollout", "start", "--release", "2.4.1", "--group", GROUP,
                          "--waves", "10,100", "--soak", "1", "--confirm", "2.4.1").stdout
        rollout_id = started.split("started ")[1].split(":")[0]

        def status() -> dict[str, Any]:
            return dict(json.loads(cli.run("rollout", "status", rollout_id, "--format",
                                           "json").stdout))

        _wait(lambda: status()["status"] == "WAITING_APPROVAL", 90, "the canary to pass")
        denied = cli.run("--role", "operator", "rollout", "approve", rollout_id, ok=False)
        assert denied.returncode == 2 and "approve rollout" in denied.stderr
        assert status()["status"] == "WAITING_APPROVAL"
        approved = cli.run("rollout", "approve", rollout_id).stdout
        assert "wave 2 all" in approved
        final = _wait(lambda: (s := status())["status"] == COMPLETED and s, 120,
                      "the rollout to complete")
        assert all(w["status"] == "PASSED" for w in final["waves"])
        after = json.loads(cli.run("devices", "list", "--group", GROUP, "--format", "json",
                                   "--limit", "1000").stdout)
        assert {m["firmware_version"] for m in after} == {"2.4.1"}
        audit = cli.run("audit", "list", "--action", "rollout.*").stdout
        assert "olga" in audit and "rollout.approve" in audit and "rollout.complete" in audit
        assert "intact" in cli.run("audit", "verify").stdout
    finally:
        cli.stop()
    assert "Traceback" not in cli.log("serve")


@pytest.mark.skipif(not FIRMWARE_BINARY.exists(), reason="firmware/build.sh not run")
async def test_rollout_onto_the_real_firmware_binary(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    rows = fleet_rows(3)
    async with engine_rig(mosquitto, db_url, tmp_path, base_url, rows=rows) as rig:
        await rig.start_service()
        devices = [DeviceProcess("firmware", r["id"], mosquitto.url, tmp_path,
                                 hardware_rev=r["hardware_rev"],
                                 firmware_version=r["firmware_version"],
                                 telemetry_interval=1, confirm_timeout=10).start()
                   for r in rows]
        try:
            await rig.until(lambda: all(rig.reported(r["id"]).get("firmware_version")
                                        for r in rows), 30, "firmware devices reporting")
            plan = plan_rollout(rig.registry, "2.4.1", "plant", spec=WaveSpec((100,)),
                                gates=Gates(soak_s=1.0),
                                job_settings=JobSettings(timeout_s=90, soak_s=1.0))
            rollout = start_rollout(rig.registry, plan, Actor("alice", "approver"),
                                    confirm="2.4.1")
            await rig.until(lambda: rig.registry.rollouts.get(rollout.id).status == COMPLETED,
                            90, "the rollout onto fleet-device")
            assert all(rig.reported(r["id"])["firmware_version"] == "2.4.1" for r in rows)
        except AssertionError:
            raise AssertionError("\n".join(d.output() for d in devices)) from None
        finally:
            for d in devices:
                d.stop()
