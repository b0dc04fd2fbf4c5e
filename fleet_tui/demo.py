"""``fleet-tui demo``: the embedded default. One command starts a broker (mosquitto when it
is on PATH, else amqtt in this process), a SQLite registry seeded from the sample fleet in a
temporary directory, the fleet service, a simulated fleet with a few failure profiles, and
the console. Quitting the console stops everything it started, by handle and pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_tui.config import ConfigError, Settings

log = logging.getLogger(__name__)

#: Failure profiles of the demo fleet: a few devices misbehave so the views have a story.
DEMO_PROFILES = ("flaky:0.03", "bad-sensor:0.01", "memory-leak:0.01", "strict-config:0.02")
AMQTT_SHADOW_PREFIX = "things"  # amqtt refuses topics that begin with "$"
DRILL_GROUP = "drill"
BAD_CANARY_DEVICES = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("the broker exited at start")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the broker did not listen on {host}:{port} within {timeout:g} s")


class MosquittoBroker:
    """A private mosquitto on a free port; stopped by its pid."""

    kind = "mosquitto"
    shadow_prefix: str | None = None  # the default "$aws/things" works

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host, self.port = "127.0.0.1", free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n"
                        "set_tcp_nodelay true\npersistence false\n"
                        "max_queued_messages 100000\n")
        logfile = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=logfile,
                                     stderr=logfile, stdin=subprocess.DEVNULL)
        proc = self.proc
        wait_listening(self.host, self.port, 10, lambda: proc.poll() is None)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class AmqttBroker:
    """amqtt (pure Python, from PyPI) in a child process; stopped by its pid."""

    kind = "amqtt"
    shadow_prefix: str | None = AMQTT_SHADOW_PREFIX

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.host, self.port = "127.0.0.1", free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        logfile = (self.workdir / "amqtt.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_tui.demo_amqtt", self.host, str(self.port)],
            stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc
        wait_listening(self.host, self.port, 20, lambda: proc.poll() is None)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGINT (a clean stop), then SIGKILL if it does not exit; only this pid."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def choose_broker(kind: str, workdir: Path) -> MosquittoBroker | AmqttBroker:
    binary = shutil.which("mosquitto")
    if kind == "mosquitto" and binary is None:
        raise ConfigError("--broker-impl mosquitto: mosquitto is not on PATH")
    if kind in ("auto", "mosquitto") and binary is not None:
        return MosquittoBroker(binary, workdir)
    return AmqttBroker(workdir)


def start_simulator(settings: Settings, fleet_file: Path, devices: int, workdir: Path,
                    telemetry_interval: int, profiles: tuple[str, ...] = DEMO_PROFILES,
                    firmware_base_url: str = "") -> subprocess.Popen[bytes]:
    """``fleet-tui sim`` as a child process (its own interpreter: the simulated fleet never
    competes with the console for the GIL); its output goes to a log file."""
    cmd = [
        sys.executable, "-m", "fleet_tui.cli", "sim", "--broker", settings.broker,
        "--from-registry", str(fleet_file), "--devices", str(devices),
        "--shadow-prefix", settings.shadow_prefix, "--fleet-prefix", settings.fleet_prefix,
        "--telemetry-interval", str(telemetry_interval), "--connect-rate", "500",
    ]
    for profile in profiles or ("none",):
        cmd += ["--profile", profile]
    if firmware_base_url:
        cmd += ["--firmware-base-url", firmware_base_url, "--boot-delay", "0.2",
                "--confirm-timeout", "10"]
    logfile = (workdir / "sim.log").open("ab")
    return subprocess.Popen(cmd, stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # Ctrl-C in the console is ours alone


class FirmwareServer:
    """The release images over HTTP (the devices download what the manifest names), on a
    free port in a thread of this process."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("firmware server: " + format, *args)


def bad_canary_fleet(data: Path, workdir: Path, devices: int) -> Path:
    """The sample fleet cut to the simulated devices, with the manifest (2.4.0 crash-loops
    on rev-b; 2.4.1 is the fix) and a group ``drill`` of them all to target."""
    out = workdir / "fleet"
    out.mkdir()
    with (data / "devices.jsonl").open() as src:
        lines = [line for line in src if line.strip()][:devices]
    (out / "devices.jsonl").write_text("".join(lines))
    kept = {json.loads(line)["id"] for line in lines}
    groups = json.loads((data / "groups.json").read_text())
    for g in groups:  # static groups keep only the devices of the cut fleet
        if "members" in g:
            g["members"] = [m for m in g["members"] if m in kept]
    groups.append({"name": DRILL_GROUP, "kind": "dynamic", "query": 'tag.site ~ "*"',
                   "description": "every simulated device: the bad-canary drill"})
    (out / "groups.json").write_text(json.dumps(groups, indent=1))
    shutil.copy(data / "releases.json", out / "releases.json")
    return out


@dataclass
class DemoRun:
    app: Any
    broker: MosquittoBroker | AmqttBroker
    sim: subprocess.Popen[bytes]
    workdir: Path


@contextlib.contextmanager
def demo_environment(args: argparse.Namespace, settings: Settings) -> Iterator[DemoRun]:
    """Broker, seeded registry, firmware server (bad-canary), simulator, service and the
    console app, ready to run; everything stops when the block ends."""
    from fleet_tui.cli import bundled_sample_data
    from fleet_tui.registry.importer import import_fleet
    from fleet_tui.registry.registry import Registry
    from fleet_tui.service.fleet_service import FleetService
    from fleet_tui.tui.app import FleetApp

    scenario = getattr(args, "scenario", "default")
    if args.devices is None:
        args.devices = BAD_CANARY_DEVICES if scenario == "bad-canary" else 2000
    if not 1 <= args.devices <= 2000:
        raise ConfigError("--devices must be 1..2000 (the sample fleet's size)")
    workdir = Path(tempfile.mkdtemp(prefix="fleet-tui-demo-"))
    broker = choose_broker(args.broker_impl, workdir)
    sim: subprocess.Popen[bytes] | None = None
    registry = None
    firmware: FirmwareServer | None = None
    logging.basicConfig(filename=workdir / "console.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        print(f"demo: starting {broker.kind} broker, seeding the registry in {workdir} …",
              flush=True)
        broker.start()
        settings.broker = f"{broker.host}:{broker.port}"
        if broker.shadow_prefix is not None:
            settings.shadow_prefix = broker.shadow_prefix
        settings.db = f"sqlite:///{workdir / 'fleet.db'}"
        settings.read_only = settings.read_only or args.read_only
        registry = Registry.open(settings.db)
        data = bundled_sample_data()
        profiles: tuple[str, ...] = DEMO_PROFILES
        telemetry_interval = args.telemetry_interval
        if scenario == "bad-canary":
            firmware = FirmwareServer(data)
            firmware.start()
            settings.jobs.firmware_base_url = firmware.url
            # A snappy drill: the gates judge within seconds, not minutes.
            settings.jobs.tick_s = min(settings.jobs.tick_s, 0.5)
            telemetry_interval = min(telemetry_interval, 2)
            settings.health.telemetry_interval_s = float(telemetry_interval)
            profiles = ()  # nothing else misbehaves: the story is the release
            data = bad_canary_fleet(data, workdir, args.devices)
        import_fleet(registry, data)
        service = FleetService(settings, registry)
        sim = start_simulator(settings, data / "devices.jsonl", args.devices, workdir,
                              telemetry_interval, profiles,
                              firmware.url if firmware is not None else "")
        broker_pid = broker.proc.pid if broker.proc is not None else None
        print(f"demo: broker {broker.kind} pid {broker_pid} on {settings.broker}, "
              f"simulator pid {sim.pid} ({args.devices} devices), workdir {workdir}"
              + (f", scenario {scenario}" if scenario != "default" else ""), flush=True)
        app = FleetApp(settings, registry, service, pace_gc=True)
        app.exit_after = args.exit_after
        yield DemoRun(app, broker, sim, workdir)  # quitting stops the service (its bridge)
    finally:
        stop_process(sim)
        if firmware is not None:
            firmware.stop()
        if registry is not None:
            registry.close()
        broker.stop()
        if args.keep:
            print(f"demo: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"demo: stopped the simulator, the service and the {broker.kind} broker")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="broker + seeded registry + service + simulated fleet + console, at once",
        description="Start a private broker (mosquitto if on PATH, else amqtt), a SQLite "
                    "registry seeded from the sample fleet in a temporary directory, the fleet "
                    "service, ~2,000 simulated devices and the console. Quitting stops all.")
    p.add_argument("--devices", "-n", type=int, default=None,
                   help="simulated devices (at most the sample fleet's 2000; default 2000, "
                        f"{BAD_CANARY_DEVICES} for --scenario bad-canary)")
    p.add_argument("--scenario", choices=("default", "bad-canary"), default="default",
                   help="bad-canary: release 2.4.0 crash-loops on rev-b; watch the canary "
                        f"halt itself, roll back, then roll out 2.4.1 (group {DRILL_GROUP})")
    p.add_argument("--broker-impl", choices=("auto", "mosquitto", "amqtt"), default="auto")
    p.add_argument("--telemetry-interval", type=int, default=10, metavar="S",
                   help="simulated telemetry interval (10 s, so the sparklines fill quickly)")
    p.add_argument("--read-only", action="store_true", help="hide every mutating action")
    p.add_argument("--headless", action="store_true", help="run the console without a terminal")
    p.add_argument("--exit-after", type=float, metavar="S",
                   help="quit the console after S seconds (with --headless: a smoke test)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    with HangupQuits() as hangup, demo_environment(args, settings) as run:
        hangup.console = run.app
        run.app.run(headless=args.headless)
        hangup.stopping = True  # the teardown below stops everything; let it
    return 0


class HangupQuits:
    """A closed terminal (SIGHUP: the SSH session dropped) or a kill (SIGTERM) quits the
    console as ``q`` does, so the demo's broker and simulator stop with it; by default
    either signal ended the process at once and left both running. Before the console
    runs, or on a second signal, the process exits (its ``finally`` blocks still stop
    what started); while the teardown runs, a signal is ignored: it stops everything."""

    def __init__(self) -> None:
        self.console: Any = None
        self.stopping = False
        self._asked = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> HangupQuits:
        for sig in (signal.SIGHUP, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            return
        try:
            loop = asyncio.get_running_loop()  # the console's, on this (the main) thread
        except RuntimeError:
            loop = None
        if loop is None or self.console is None or self._asked:
            raise SystemExit(128 + signum)
        self._asked = True
        loop.call_soon_threadsafe(self.console.exit)
