"""`fleet-tui demo` starts everything and, when the console quits, leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
