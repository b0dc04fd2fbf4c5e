"""``fleet-tui serve`` workers as child processes sharing one registry and one broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start_worker(name: str, db: str, broker: str, workdir: Path, *, partitions: int = 16,
                 lease_ttl_s: float = 3.0, extra: str = "") -> subprocess.Popen[bytes]:
    """One worker with its own service id, config file and log (``workdir/<name>.log``)."""
    config = workdir / f"{name}.toml"
    config.write_text(
        f'db = "{db}"\nbroker = "{broker}"\nservice_id = "{name}"\n{extra}'
        f"[shadow]\nflush_interval_ms = 10\npartitions = {partitions}\n"
        f"partition_lease_ttl_s = {lease_ttl_s}\n")
    env = {**os.environ, "FLEET_TUI_CONFIG": str(config)}
    log = (workdir / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "fleet_tui.cli", "serve"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
