"""TLS cost for a fleet: connect N devices (the simulator's MQTT client, each with its own
client certificate, mosquitto ``require_certificate`` + ``use_identity_as_username`` + the
generated ACL) against the same N over plain TCP, then QoS 1 publish round trips for both.

Everything runs against a mosquitto started here on free ports; the CA and certificates
are generated with the openssl CLI (not timed). Prints human lines, one JSON line per
metric; the last JSON line is TLS connect time against the plain-TCP baseline.

    python bench/tls_overhead.py [--devices N] [--messages M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_tui.config import TlsSettings, tls_context  # noqa: E402
from fleet_tui.service.broker_acl import mosquitto_acl  # noqa: E402
from fleet_tui.service.topics import Topics  # noqa: E402
from fleet_tui.sim.mqtt_lite import MqttClient  # noqa: E402
from tests.integration.certs import TestCA  # noqa: E402
from tests.integration.mosquitto import Mosquitto, TlsListener  # noqa: E402


async def connect_all(mosq: Mosquitto, things: list[str], tls: dict[str, object]) -> float:
    start = time.perf_counter()
    clients = await asyncio.gather(*(
        MqttClient.connect(mosq.host, mosq.port, t, on_message=lambda a, b: None,
                           tls=tls.get(t))  # type: ignore[arg-type]
        for t in things))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.disconnect() for c in clients))
    return elapsed


async def round_trips(mosq: Mosquitto, thing: str, ctx: object, n: int) -> float:
    client = await MqttClient.connect(mosq.host, mosq.port, thing, on_message=lambda a, b: None,
                                      tls=ctx)  # type: ignore[arg-type]
    topic = f"fleet/{thing}/telemetry"
    start = time.perf_counter()
    for i in range(n):
        fut = client.publish(topic, b'{"seq":%d}' % i, qos=1)
        assert fut is not None
        await fut
    elapsed = time.perf_counter() - start
    await client.disconnect()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-tls-bench-"))
    things = [f"dev-{i:05d}" for i in range(args.devices)]
    ca = TestCA(work / "ca")
    server_cert, server_key = ca.server()
    t0 = time.perf_counter()
    for t in things:
        ca.client(t)
    print(f"issued {len(things)} client certificates in {time.perf_counter() - t0:.1f} s "
          "(not timed below)")
    acl = work / "acl"
    acl.write_text(mosquitto_acl(Topics()))
    plain = Mosquitto(extra_conf="max_connections -1").start()
    secure = Mosquitto(tls=TlsListener(ca.cert, server_cert, server_key, True, True),
                       acl_file=acl, extra_conf="max_connections -1").start()
    try:
        contexts: dict[str, object] = {
            t: tls_context(TlsSettings(ca_file=str(ca.cert), cert_file=str(ca.dir / f"{t}.crt"),
                                       key_file=str(ca.dir / f"{t}.key")))
            for t in things}
        plain_s = asyncio.run(connect_all(plain, things, {}))
        tls_s = asyncio.run(connect_all(secure, things, contexts))
        plain_rate = asyncio.run(round_trips(plain, things[0], None, args.messages))
        tls_rate = asyncio.run(round_trips(secure, things[0], contexts[things[0]], args.messages))
    finally:
        plain.close()
        secure.close()
    print(f"connect {args.devices} devices: plain {plain_s:.2f} s, mTLS+ACL {tls_s:.2f} s")
    print(f"QoS 1 round trips, one device: plain {plain_rate:.0f}/s, mTLS+ACL {tls_rate:.0f}/s")
    lines = [
        {"bench": "tls_overhead", "metric": "qos1_round_trips_per_s", "value": round(tls_rate),
         "baseline": round(plain_rate), "ratio": round(tls_rate / plain_rate, 3)},
        {"bench": "tls_overhead", "metric": f"connect_{args.devices}_devices_s",
         "value": round(tls_s, 3), "baseline": round(plain_s, 3),
         "ratio": round(tls_s / plain_s, 2)},
    ]
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
