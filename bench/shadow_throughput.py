"""Shadow service throughput and latency through a real mosquitto, service on SQLite.

Baseline in the same run: a raw echo through the same broker with the same client library
(aiomqtt), no service logic. Prints human lines, then JSON lines; the last is the headline
(sustained accepted updates/s against the raw echo rate).

    python bench/shadow_throughput.py [--things 10000] [--updates 30000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_tui.service.topics import Topics  # noqa: E402
from tests.integration.mosquitto import Mosquitto  # noqa: E402

T = Topics()
ECHO = """
import asyncio, socket, sys, aiomqtt
async def main():
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1]), identifier="echo",
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            max_inflight_messages=1000) as c:
        await c.subscribe("bench/in/#", qos=1)
        print("ready", flush=True)
        async for m in c.messages:
            await c.publish("bench/out/" + m.topic.value[9:], m.payload, qos=1)
asyncio.run(main())
"""


ECHO_LITE = """
import asyncio, sys
from fleet_tui.sim.mqtt_lite import MqttClient
async def main():
    box = {}
    def on_message(topic, payload):
        box["c"].publish("bench/out/" + topic[9:], payload, qos=1)
    box["c"] = await MqttClient.connect("127.0.0.1", int(sys.argv[1]), "echo",
                                        on_message=on_message)
    await box["c"].subscribe([("bench/in/#", 1)])
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def flood_lite(port: int, topics: list[str], replies: str, payload_of,
                     timeout: float = 300):
    """Like :func:`flood` with the simulator's light MQTT client as the load generator."""
    from fleet_tui.sim.mqtt_lite import MqttClient

    got = 0
    done = asyncio.Event()

    def on_message(_topic: str, _payload: bytes) -> None:
        nonlocal got
        got += 1
        if got >= len(topics):
            done.set()

    c = await MqttClient.connect("127.0.0.1", port, "load-lite", on_message=on_message)
    await c.subscribe([(replies, 1)])
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    for i, topic in enumerate(topics):
        c.publish(topic, payload_of(i), qos=1)
        if c.unacked > 500:  # stay within the broker's in-flight window
            while c.unacked > 100:
                await asyncio.sleep(0.001)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    elapsed = time.perf_counter() - t0
    await c.disconnect()
    return got / elapsed, got, elapsed


def client(port: int, name: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, identifier=name, max_inflight_messages=1000,
                          socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


async def flood(port: int, topics: list[str], replies: str, payload_of, timeout: float = 300):
    """Publish one message per topic as fast as possible; count replies. (rate/s, n)"""
    got = 0
    done = asyncio.Event()
    async with client(port, "load") as c:
        await c.subscribe(replies, qos=1)

        async def read() -> None:
            nonlocal got
            async for _ in c.messages:
                got += 1
                if got >= len(topics):
                    done.set()
        reader = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        for start in range(0, len(topics), 200):
            await asyncio.gather(*(c.publish(t, payload_of(i), qos=1)
                                   for i, t in enumerate(topics[start:start + 200], start)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        elapsed = time.perf_counter() - t0
        reader.cancel()
    return got / elapsed, got, elapsed


async def paced(port: int, things: list[str], rate: float, seconds: float) -> list[float]:
    """Offer ``rate`` updates/s; latency (ms) update -> accepted for each."""
    sent: dict[str, float] = {}
    lat: list[float] = []
    async with client(port, "paced") as c:
        await c.subscribe(T.shadow("+", "", "update", "accepted"), qos=1)

        async def read() -> None:
            async for m in c.messages:
                token = orjson.loads(m.payload).get("clientToken")  # type: ignore[arg-type]
                if token in sent:
                    lat.append((time.perf_counter() - sent.pop(token)) * 1000)
        reader = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        n = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(n):
            target = t0 + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            token = f"p{i}"
            sent[token] = time.perf_counter()
            await c.publish(T.shadow(things[i % len(things)]),
                            orjson.dumps({"state": {"reported": {"seq": i}}, "clientToken": token}),
                            qos=1)
        await asyncio.sleep(2)
        reader.cancel()
    return lat


def rss_per_100k_shadows() -> float:
    """MB of RSS that 100,000 typical shadows add to the service's memory."""
    from fleet_tui.domain.shadow import ShadowDocument
    from fleet_tui.service.shadows import Entry

    gc.collect()
    before = _rss_mb()
    shadows = {}
    for i in range(100_000):
        doc = ShadowDocument.empty().apply_update({"state": {
            "desired": {"led_is_on": True, "telemetry_interval_s": 60},
            "reported": {"firmware_version": "2.2.0", "hardware_rev": "rev-b", "led_is_on": True,
                         "telemetry_interval_s": 60, "tags": {"location": "factory-A"},
                         "ota_status": "idle", "ota_error": None}}}, 1_700_000_000).document
        shadows[(f"esp32-{i:06d}", "")] = Entry(doc, True)
    gc.collect()
    return _rss_mb() - before


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--things", type=int, default=10_000)
    ap.add_argument("--updates", type=int, default=30_000)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--load-client", choices=("aiomqtt", "lite"), default="aiomqtt",
                    help="client of the load generator and the echo baseline (same for both)")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    broker = Mosquitto().start()
    lines: list[str] = []
    tmp = Path(tempfile.mkdtemp())
    try:
        lite = args.load_client == "lite"
        run_flood = flood_lite if lite else flood
        echo = subprocess.Popen([sys.executable, "-c", ECHO_LITE if lite else ECHO,
                                 str(broker.port)], stdout=subprocess.PIPE, cwd=ROOT)
        assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
        topics = [f"bench/in/{i % args.things}" for i in range(args.updates)]
        echo_rate, echo_n, echo_s = asyncio.run(
            run_flood(broker.port, topics, "bench/out/#", lambda i: b'{"seq": %d}' % i))
        echo.send_signal(signal.SIGTERM)
        echo.wait(10)
        print(f"raw echo ({args.load_client}, QoS1): {echo_n} in {echo_s:.1f} s = "
              f"{echo_rate:,.0f} msg/s")

        env = {**os.environ, "FLEET_TUI_DB": f"sqlite:///{tmp / 'bench.db'}",
               "FLEET_TUI_BROKER": broker.url, "FLEET_TUI_CONFIG": str(tmp / "none.toml")}
        serve = subprocess.Popen([sys.executable, "-m", "fleet_tui.cli", "serve",
                                  "--log-level", "warning"], env=env)
        time.sleep(3)
        things = [f"esp32-{i:06d}" for i in range(args.things)]
        shadow_topics = [T.shadow(things[i % args.things]) for i in range(args.updates)]
        cpu0 = _cpu_s(serve.pid)
        rate, n, secs = asyncio.run(run_flood(
            broker.port, shadow_topics, T.shadow("+", "", "update", "accepted"),
            lambda i: orjson.dumps({"state": {"reported": {"seq": i, "led_is_on": i % 2 == 0}},
                                    "clientToken": f"t{i}"})))
        cpu = _cpu_s(serve.pid) - cpu0
        print(f"shadow service (durable, SQLite): {n} accepted in {secs:.1f} s = "
              f"{rate:,.0f} updates/s (ratio {rate / echo_rate:.2f} of raw echo)")
        # CPU time is steadier than wall time on a shared machine: compare it across runs.
        print(f"service CPU per accepted update: {cpu / max(n, 1) * 1e6:.0f} us "
              f"({cpu / secs * 100:.0f}% of one core)")
        lat = asyncio.run(paced(broker.port, things, args.rate, args.seconds))
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = statistics.quantiles(lat, n=100)[98] if len(lat) > 100 else float("nan")
        print(f"latency at {args.rate:.0f}/s offered: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"({len(lat)} answered of {int(args.rate * args.seconds)})")
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        rss = rss_per_100k_shadows()
        print(f"RSS per 100k shadows held: {rss:.0f} MB")
        for metric, value, base in [
            ("p50_latency_ms_at_1000_per_s", p50, None),
            ("p99_latency_ms_at_1000_per_s", p99, None),
            ("rss_mb_per_100k_shadows", rss, None),
            ("accepted_updates_per_s", rate, echo_rate),
        ]:
            lines.append(json.dumps({
                "bench": "shadow_throughput", "metric": metric, "value": round(value, 2),
                "baseline": round(base, 2) if base else None,
                "ratio": round(value / base, 3) if base else None}))
    finally:
        broker.close()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
