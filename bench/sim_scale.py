"""Simulator scale: N devices (default 10,000) in one process against a real mosquitto.

Starts mosquitto on a free port (``max_connections -1``, file limit raised), then runs each
phase in its own Python process so CPU and RSS are that phase's alone:

- baseline: N bare connections of the same MQTT client (``fleet_tui.sim.mqtt_lite``) with
  the same last will, doing nothing but keepalive;
- sim: N simulated devices (``fleet_tui.sim.fleet``) with telemetry every 60 s; then the
  same devices switched to telemetry every ``--fast-interval`` seconds (through the
  device's own delta handling) to measure messages per second;
- optionally (``--compare-aiomqtt N``) N bare aiomqtt connections, the alternative client.

Reports connections held (ours and the broker's ``$SYS`` count), messages/s (published by
the sim and counted by the broker), CPU % of one core and RSS per 1,000 devices. Prints
human lines, one JSON line per metric, and last the headline JSON line: CPU per 1,000
devices with telemetry every 60 s against the bare-connection baseline.

    python bench/sim_scale.py [--devices N] [--window S] [--fast-interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_tui.sim.mqtt_lite import MqttClient, MqttError, Will  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class SysWatch:
    """Broker-side counters from mosquitto's $SYS tree (published every second)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.client: MqttClient | None = None

    async def start(self, port: int) -> None:
        def on_message(topic: str, payload: bytes) -> None:
            with contextlib.suppress(ValueError):
                self.values[topic.rsplit("/", 1)[0] if topic.endswith("/1min") else topic] = (
                    float(payload.split()[0]))

        self.client = await MqttClient.connect("127.0.0.1", port, "bench-sys", keepalive=30,
                                               on_message=on_message)
        await self.client.subscribe([("$SYS/broker/clients/connected", 0),
                                     ("$SYS/broker/publish/messages/received", 0)])

    @property
    def connected(self) -> int:
        return int(self.values.get("$SYS/broker/clients/connected", 0))

    @property
    def received(self) -> float:
        return self.values.get("$SYS/broker/publish/messages/received", 0.0)

    async def fresh(self) -> None:
        """Let the broker publish its $SYS values (every second, when they change)."""
        await asyncio.sleep(1.2)


async def measure(window: float, broker_pid: int, sys_watch: SysWatch,
                  published: Any = None) -> dict[str, float]:
    """CPU of this process and of the broker, messages, over ``window`` seconds."""
    await sys_watch.fresh()
    rx0, pub0 = sys_watch.received, published() if published else 0
    c0, b0, t0 = cpu_s(), cpu_s(broker_pid), time.monotonic()
    await asyncio.sleep(window)
    await sys_watch.fresh()
    c1, b1, t1 = cpu_s(), cpu_s(broker_pid), time.monotonic()
    dt = t1 - t0
    return {
        "cpu_pct": 100 * (c1 - c0) / dt,
        "broker_cpu_pct": 100 * (b1 - b0) / dt,
        "broker_msgs_per_s": (sys_watch.received - rx0) / dt,
        "published_per_s": ((published() if published else 0) - pub0) / dt,
        "broker_connected": sys_watch.connected,
    }


# --------------------------------------------------------------------------- phases


async def phase_bare(args: argparse.Namespace) -> dict[str, Any]:
    sys_watch = SysWatch()
    await sys_watch.start(args.port)
    r0 = rss_mb()
    clients: list[MqttClient] = []
    t0 = time.monotonic()

    async def one(i: int) -> None:
        await asyncio.sleep(i / args.connect_rate)
        thing = f"bare-{i:06d}"
        for attempt in range(8):
            try:
                clients.append(await MqttClient.connect(
                    "127.0.0.1", args.port, thing, keepalive=30,
                    will=Will(f"fleet/{thing}/presence", b'{"state":"offline"}'),
                    on_message=lambda t, p: None))
                return
            except MqttError:
                await asyncio.sleep(0.5 * 2**attempt)

    await asyncio.gather(*(one(i) for i in range(args.devices)))
    connect_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    r1 = rss_mb()
    m = await measure(args.window, args.broker_pid, sys_watch)
    held = sum(c.connected for c in clients)
    for c in clients:
        c.abort()
    return {"phase": "bare", "held": held, "connect_s": connect_s, "rss_mb": r1 - r0, **m}


async def phase_sim(args: argparse.Namespace) -> dict[str, Any]:
    import orjson

    from fleet_tui.sample_fleet import devices
    from fleet_tui.sim.fleet import Fleet, device_config

    sys_watch = SysWatch()
    await sys_watch.start(args.port)
    r0 = rss_mb()
    configs = [device_config(row, telemetry_interval_s=60) for row in devices(args.devices, 7)]
    fleet = Fleet(configs, "127.0.0.1", args.port, connect_rate=args.connect_rate)
    t0 = time.monotonic()
    await fleet.start()
    ok = await fleet.wait_connected(timeout=args.devices / args.connect_rate + 120)
    connect_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    r1 = rss_mb()
    slow = await measure(args.window, args.broker_pid, sys_watch,
                         lambda: fleet.stats["published"])
    held_slow = fleet.connected

    # Telemetry every --fast-interval s, set through each device's own delta handling,
    # the switches spread over one interval (as a fleet's phases would be).
    loop = asyncio.get_running_loop()
    sims = list(fleet.devices.values())
    for i, sim in enumerate(sims):
        topic = f"$aws/things/{sim.thing}/shadow/update/delta"
        payload = orjson.dumps({"state": {"telemetry_interval_s": args.fast_interval},
                                "version": 10**6})

        def switch(sim: Any = sim, topic: str = topic, payload: bytes = payload) -> None:
            sim.run(sim.device.on_message(fleet.now(), topic, payload))

        loop.call_later(args.fast_interval * i / len(sims), switch)
    await asyncio.sleep(args.fast_interval + args.settle)
    fast = await measure(args.fast_window, args.broker_pid, sys_watch,
                         lambda: fleet.stats["published"])
    held_fast = fleet.connected
    stats = dict(fleet.stats)
    await fleet.stop()
    return {"phase": "sim", "all_connected": ok, "connect_s": connect_s, "rss_mb": r1 - r0,
            "held": held_slow, "held_fast": held_fast, "slow": slow, "fast": fast,
            "stats": stats}


async def phase_aiomqtt(args: argparse.Namespace) -> dict[str, Any]:
    import aiomqtt

    sys_watch = SysWatch()
    await sys_watch.start(args.port)
    r0 = rss_mb()
    clients: list[aiomqtt.Client] = []
    t0 = time.monotonic()

    async def one(i: int) -> None:
        await asyncio.sleep(i / args.connect_rate)
        thing = f"aio-{i:06d}"
        c = aiomqtt.Client("127.0.0.1", args.port, identifier=thing, keepalive=30,
                           will=aiomqtt.Will(f"fleet/{thing}/presence", b'{"state":"offline"}',
                                             1, True))
        with contextlib.suppress(aiomqtt.MqttError):
            await c.__aenter__()
            clients.append(c)

    await asyncio.gather(*(one(i) for i in range(args.devices)))
    connect_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    r1 = rss_mb()
    m = await measure(args.window, args.broker_pid, sys_watch)
    return {"phase": "aiomqtt", "held": len(clients), "connect_s": connect_s,
            "rss_mb": r1 - r0, **m}


def run_phase(args: argparse.Namespace) -> None:
    raise_nofile()
    fn = {"bare": phase_bare, "sim": phase_sim, "aiomqtt": phase_aiomqtt}[args.phase]
    loop = asyncio.new_event_loop()
    result = loop.run_until_complete(fn(args))
    print(json.dumps(result), flush=True)
    os._exit(0)  # the broker sees the rest go; no teardown of thousands of clients


# --------------------------------------------------------------------------- driver


def child(args: argparse.Namespace, phase: str, devices: int, port: int, pid: int) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--devices", str(devices),
           "--port", str(port), "--broker-pid", str(pid), "--window", str(args.window),
           "--fast-window", str(args.fast_window), "--fast-interval", str(args.fast_interval),
           "--connect-rate", str(args.connect_rate), "--settle", str(args.settle)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--window", type=float, default=60.0,
                    help="measurement window at 60 s telemetry (covers one interval)")
    ap.add_argument("--fast-interval", type=int, default=1,
                    help="telemetry interval of the messages/s measurement")
    ap.add_argument("--fast-window", type=float, default=20.0)
    ap.add_argument("--connect-rate", type=float, default=2000.0)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--compare-aiomqtt", type=int, default=0, metavar="N",
                    help="also measure N bare aiomqtt connections")
    ap.add_argument("--phase", choices=("bare", "sim", "aiomqtt"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--broker-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        run_phase(args)
        return

    hard = raise_nofile()
    if args.devices + 100 > hard:
        raise SystemExit(f"--devices {args.devices} needs more file descriptors than the "
                         f"hard limit ({hard}); raise it (ulimit -Hn) first")
    from tests.integration.mosquitto import Mosquitto

    broker = Mosquitto(extra_conf="max_connections -1\nsys_interval 1\n").start()
    assert broker.proc is not None
    pid = broker.proc.pid
    n = args.devices
    per_k = n / 1000
    lines: list[str] = []

    def report(metric: str, value: float, baseline: float, unit: str) -> None:
        ratio = value / baseline if baseline else float("inf")
        print(f"{metric:<36} sim {value:10.2f} {unit:<8} bare {baseline:10.2f} {unit:<8}"
              f" ratio {ratio:6.2f}")
        lines.append(json.dumps({"bench": "sim_scale", "metric": metric,
                                 "value": round(value, 3), "baseline": round(baseline, 3),
                                 "ratio": round(ratio, 3)}))

    try:
        print(f"mosquitto pid {pid} on {broker.url}; {n} devices; fd limit {hard}; "
              f"{os.cpu_count()} cores")
        bare = child(args, "bare", n, broker.port, pid)
        print(f"bare: {bare['held']}/{n} held (broker counts {bare['broker_connected']}), "
              f"connected in {bare['connect_s']:.1f} s, RSS +{bare['rss_mb']:.1f} MB, "
              f"CPU {bare['cpu_pct']:.2f}% (broker {bare['broker_cpu_pct']:.2f}%)")
        time.sleep(3)
        sim = child(args, "sim", n, broker.port, pid)
        slow, fast = sim["slow"], sim["fast"]
        print(f"sim:  {sim['held']}/{n} held (broker counts {slow['broker_connected']}), "
              f"connected in {sim['connect_s']:.1f} s, RSS +{sim['rss_mb']:.1f} MB")
        print(f"  telemetry 60 s: {slow['published_per_s']:.0f} msg/s published, broker "
              f"{slow['broker_msgs_per_s']:.0f}/s; CPU {slow['cpu_pct']:.2f}% "
              f"(broker {slow['broker_cpu_pct']:.2f}%)")
        print(f"  telemetry {args.fast_interval} s: {fast['published_per_s']:.0f} msg/s "
              f"published (target {n / args.fast_interval:.0f}), broker "
              f"{fast['broker_msgs_per_s']:.0f}/s; CPU {fast['cpu_pct']:.1f}% "
              f"(broker {fast['broker_cpu_pct']:.1f}%); {sim['held_fast']}/{n} held")
        print(f"  counters: {sim['stats']}")
        if args.compare_aiomqtt:
            time.sleep(3)
            aio = child(args, "aiomqtt", args.compare_aiomqtt, broker.port, pid)
            k = args.compare_aiomqtt / 1000
            print(f"aiomqtt: {aio['held']}/{args.compare_aiomqtt} held, connected in "
                  f"{aio['connect_s']:.1f} s, RSS +{aio['rss_mb']:.1f} MB "
                  f"({aio['rss_mb'] / k:.1f} MB per 1,000), idle CPU {aio['cpu_pct']:.2f}% "
                  f"({aio['cpu_pct'] / k:.2f}% per 1,000)")
            lines.append(json.dumps({
                "bench": "sim_scale", "metric": "aiomqtt_idle_cpu_pct_per_1000",
                "value": round(aio["cpu_pct"] / k, 3),
                "baseline": round(bare["cpu_pct"] / per_k, 3),
                "ratio": round(aio["cpu_pct"] / k / max(bare["cpu_pct"] / per_k, 1e-9), 3)}))

        report("connections_held", sim["held"], bare["held"], "conns")
        report("rss_mb_per_1000_devices", sim["rss_mb"] / per_k, bare["rss_mb"] / per_k, "MB")
        report("fast_msgs_per_s", fast["published_per_s"], n / args.fast_interval, "msg/s")
        report("fast_cpu_pct_per_1000_devices", fast["cpu_pct"] / per_k,
               bare["cpu_pct"] / per_k, "%")
        report("cpu_pct_per_1000_devices_telemetry_60s", slow["cpu_pct"] / per_k,
               bare["cpu_pct"] / per_k, "%")
        for line in lines:
            print(line)
    finally:
        broker.close()


if __name__ == "__main__":
    main()
