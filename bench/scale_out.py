"""Accepted shadow updates/s with 1, 2 and 3 `fleet-tui serve` workers on one PostgreSQL
registry and one mosquitto (partitioned shadows, docs/scale-out.md).

Baseline in the same run: 1 worker. On a 2-core machine the load generator, the broker,
PostgreSQL and the workers share the cores, so the figure shows the overhead of
partitioning (every worker hears every request), not the gain: per-worker efficiency =
rate(N) / (N * rate(1)). Last line: JSON.

    python bench/scale_out.py [--things 200] [--seconds 8] [--workers 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_tui.registry.registry import Registry  # noqa: E402
from tests.conftest import PG_ADMIN_URL  # noqa: E402
from tests.integration.mosquitto import Mosquitto  # noqa: E402
from tests.integration.shadow_load import run_load  # noqa: E402
from tests.integration.workers import start_worker, stop_worker  # noqa: E402

PARTITIONS = 16


async def one_run(workers: int, things: int, seconds: float, workdir: Path) -> dict:
    name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    broker = Mosquitto().start()
    procs = []
    try:
        Registry.open(url).close()  # migrate once, before the workers race to
        procs = [start_worker(f"b{workers}-{i}", url, broker.url, workdir,
                              partitions=PARTITIONS, lease_ttl_s=3.0,
                              extra="[jobs]\nengine = false\n") for i in range(workers)]
        reg = Registry.open(url)
        deadline = time.monotonic() + 60
        while True:
            held = {s.holder for s in reg.leases.live("shadow-part-", time.time())}
            if len(reg.leases.live("shadow-part-", time.time())) == PARTITIONS \
                    and len(held) == workers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} workers did not share the partitions")
            await asyncio.sleep(0.3)
        reg.close()
        stop = asyncio.Event()
        ids = [f"bench-{i:04d}" for i in range(things)]
        task = asyncio.create_task(run_load(broker.host, broker.port, ids, stop,
                                            retry_s=5.0, client_id=f"bench-load-{workers}"))
        await asyncio.sleep(seconds)
        stop.set()
        result = await task
        return {"workers": workers, "accepted": result.accepted,
                "rate": result.accepted / result.elapsed_s, "retried": len(result.retried)}
    finally:
        for p in procs:
            stop_worker(p)
        broker.stop()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--things", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--workers", default="1,2,3")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            r = asyncio.run(one_run(n, args.things, args.seconds, Path(tmp)))
            runs.append(r)
            print(f"{n} worker(s): {r['accepted']} accepted in {args.seconds:g} s "
                  f"= {r['rate']:.0f} updates/s ({r['retried']} retried)", flush=True)
    base = runs[0]["rate"]
    for r in runs:
        eff = r["rate"] / (r["workers"] * base) if base else 0.0
        r["per_worker_efficiency"] = eff
        print(f"{r['workers']} worker(s): {r['rate'] / base:.2f}x the 1-worker rate, "
              f"per-worker efficiency {eff:.2f}")
    last = runs[-1]
    print(json.dumps({"bench": "scale_out", "metric": f"accepted_updates_per_s_{last['workers']}"
                      "_workers", "value": round(last["rate"], 1),
                      "baseline": round(base, 1), "ratio": round(last["rate"] / base, 3),
                      "per_worker_efficiency": round(last["per_worker_efficiency"], 3),
                      "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
