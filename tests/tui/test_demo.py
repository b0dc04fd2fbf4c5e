"""`fleet-tui demo` starts everything and, when the console quits, leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_starts_headless_and_shuts_down_cleanly(broker: str, tmp_path: Path) -> None:
    env = {**os.environ, "FLEET_TUI_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.run(
        [sys.executable, "-m", "fleet_tui.cli", "demo", "--headless", "--exit-after", "4",
         "--devices", "50", "--broker-impl", broker],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    started = re.search(r"broker (\w+) pid (\d+) on \S+, simulator pid (\d+) \(50 devices\), "
                        r"workdir (\S+)", proc.stdout)
    assert started is not None, proc.stdout
    kind, broker_pid, sim_pid, workdir = started.groups()
    assert kind == broker
    assert not alive(int(broker_pid)) and not alive(int(sim_pid))
    assert not Path(workdir).exists()
    assert f"stopped the simulator, the service and the {broker} broker" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["hangup", "term"])
def test_a_closed_terminal_stops_the_demo_and_its_children(sig: int, tmp_path: Path) -> None:
    """An SSH session that drops sends SIGHUP: the console quits as with `q`, and the
    broker and simulator it started do not live on."""
    env = {**os.environ, "FLEET_TUI_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_tui.cli", "demo", "--headless", "--exit-after", "120",
         "--devices", "20", "--broker-impl", "mosquitto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        started = None
        deadline = time.monotonic() + 60
        while started is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            started = re.search(r"broker mosquitto pid (\d+) on \S+, simulator pid (\d+) "
                                r"\(20 devices\), workdir (\S+)", line)
        assert started is not None
        broker_pid, sim_pid, workdir = int(started[1]), int(started[2]), started[3]
        time.sleep(2)  # the console is up
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopped the simulator, the service and the mosquitto broker" in out, err[-2000:]
    assert not alive(broker_pid) and not alive(sim_pid)
    assert not Path(workdir).exists()


@pytest.mark.slow
async def test_bad_canary_scenario_runs_by_keyboard_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fleet-tui demo --scenario bad-canary` as a fresh install runs it (its own broker,
    registry, firmware server, simulator and service), driven by keys only: the 2.4.0
    canary halts itself, R rolls it back, and 2.4.1 goes through every wave."""
    from fleet_tui.cli import build_parser
    from fleet_tui.config import load_settings
    from fleet_tui.demo import DRILL_GROUP, demo_environment
    from tests.tui.test_console_flows import settle, static_text
    from tests.tui.test_rollout_live import plan_and_start

    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    args = build_parser().parse_args(["demo", "--scenario", "bad-canary", "--devices", "24"])
    settings = load_settings(None, {})
    with demo_environment(args, settings) as run:
        app = run.app
        app.animation_level = "none"
        registry = app.registry
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)

            async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
                deadline = time.monotonic() + timeout
                while not check():
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    await pilot.pause(0.25)

            await until(lambda: registry.count_devices(where="online = true") == 24, 60,
                        "the simulated fleet online")
            bad = await plan_and_start(app, pilot, ("down",), "2.4.0", group=DRILL_GROUP)
            await until(lambda: registry.rollouts.get(bad.id).status == "HALTED", 120,
                        "the canary to halt itself")
            await pilot.pause(1.5)  # the monitor's next refresh
            await settle(pilot)
            assert "error gate" in static_text(app, "#rollout-reason")
            assert "rev-b" in static_text(app, "#rollout-evidence")
            await until(lambda: bool(registry.jobs.counts([bad.waves[0].job_id])[
                bad.waves[0].job_id].get("SUCCEEDED")), 30, "a canary device on 2.4.0")
            await pilot.press("R", "y")
            await until(lambda: registry.rollouts.get(bad.id).status == "ROLLED_BACK", 120,
                        "the roll back")
            await pilot.press("escape", "escape")
            await settle(pilot)
            good = await plan_and_start(app, pilot, (), "2.4.1", group=DRILL_GROUP)
            for _ in range(len(good.waves) - 1):
                await until(lambda: registry.rollouts.get(good.id).status
                            == "WAITING_APPROVAL", 120, "a wave to pass")
                await pilot.press("a")
                await settle(pilot)
            await until(lambda: registry.rollouts.get(good.id).status == "COMPLETED", 120,
                        "the rollout to complete")
            await pilot.press("q")
    assert not run.workdir.exists()
