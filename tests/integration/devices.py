"""Device implementations under test, as processes: the firmware's host binary
(``fleet-device``) and the Python simulator (``fleet-tui sim`` with one device)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_BINARY = ROOT / "firmware" / "build" / "host" / "fleet-device"
IMPLEMENTATIONS = ("firmware", "sim")


class DeviceProcess:
    def __init__(self, impl: str, thing: str, broker: str, workdir: Path, *,
                 hardware_rev: str = "rev-b", firmware_version: str = "2.2.0",
                 telemetry_interval: int = 2, confirm_timeout: int = 10) -> None:
        self.impl, self.thing, self.broker = impl, thing, broker
        self.workdir = workdir / f"{impl}-{thing}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hardware_rev, self.firmware_version = hardware_rev, firmware_version
        self.telemetry_interval, self.confirm_timeout = telemetry_interval, confirm_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "device.log"

    def command(self) -> list[str]:
        if self.impl == "firmware":
            return [str(FIRMWARE_BINARY), "--thing", self.thing, "--broker", self.broker,
                    "--state-dir", str(self.workdir / "state"),
                    "--hardware-rev", self.hardware_rev,
                    "--firmware-version", self.firmware_version,
                    "--telemetry-interval", str(self.telemetry_interval),
                    "--confirm-timeout", str(self.confirm_timeout), "--keepalive", "5",
                    "--location", "lab"]
        fleet = self.workdir / "fleet.jsonl"
        fleet.write_bytes(orjson.dumps({
            "id": self.thing, "hardware_rev": self.hardware_rev,
            "firmware_version": self.firmware_version,
            "reported": {"tags": {"location": "lab"}}}) + b"\n")
        return [sys.executable, "-m", "fleet_tui.cli", "sim", "--broker", self.broker,
                "--from-registry", str(fleet), "--telemetry-interval",
                str(self.telemetry_interval), "--confirm-timeout", str(self.confirm_timeout),
                "--boot-delay", "0.3", "--log-level", "info"]

    def start(self) -> DeviceProcess:
        if self.impl == "firmware" and not FIRMWARE_BINARY.exists():
            raise RuntimeError(f"{FIRMWARE_BINARY} is missing: run firmware/build.sh")
        env = {**os.environ, "FLEET_TUI_CONFIG": str(self.workdir / "none.toml")}
        self.proc = subprocess.Popen(self.command(), stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, env=env)
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
