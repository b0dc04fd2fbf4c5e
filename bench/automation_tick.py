"""What automation costs the engine's tick: the real JobsEngine.tick on a generated fleet
(default 20,000 devices, 90% online, telemetry for all, the sample policies loaded and a
maintenance window on a group), once with the scheduler, policy engine, alert monitor
and window gate judging on every tick, once without them (the baseline, same run, same
registry). The tick holds the registry's write lock, so its time is time no one else
can write; the policies' and alert rules' judging runs off the lock (measured apart).

    python bench/automation_tick.py [--devices N] [--ticks T]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_tui.config import Settings  # noqa: E402
from fleet_tui.registry.importer import import_fleet  # noqa: E402
from fleet_tui.registry.registry import Registry  # noqa: E402
from fleet_tui.sample_fleet import write_fleet  # noqa: E402
from fleet_tui.service.fleet_service import FleetService  # noqa: E402
from fleet_tui.service.job_control import Actor  # noqa: E402
from fleet_tui.service.policies import load_policy_file  # noqa: E402
from fleet_tui.service.scheduler import set_window  # noqa: E402


def median_tick_ms(service: FleetService, start: float, ticks: int
                   ) -> tuple[float, float]:
    """Median ms of the tick (the write lock is held) and of the judging that runs off
    the lock on the participants' threads (joined between ticks, so every tick applies a
    complete judgement)."""
    tick_times, judge_times = [], []
    for i in range(ticks):
        t0 = time.perf_counter()
        service.jobs.tick(start + i)
        t1 = time.perf_counter()
        for p in service.jobs.participants:
            thread = getattr(p, "_thread", None)
            if thread is not None:
                thread.join()
        tick_times.append((t1 - t0) * 1000)
        judge_times.append((time.perf_counter() - t1) * 1000)
    return statistics.median(tick_times), statistics.median(judge_times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--ticks", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_fleet(Path(tmp) / "fleet", args.devices, with_images=False)
        url = f"sqlite:///{tmp}/bench.db"
        registry = Registry.open(url)
        import_fleet(registry, Path(tmp) / "fleet")
        settings = Settings(db=url)
        settings.automation.evaluate_s = 0.0  # evaluate on every tick: the worst case
        service = FleetService(settings, registry)
        now = 1_900_000_000.0
        ids = registry.device_ids()
        for i, d in enumerate(ids):
            if i % 10:
                service.presence.on_presence(d, b'{"state": "online"}', now)
            service.telemetry.on_telemetry(d, orjson.dumps({
                "ts": now, "uptime_s": 1000, "heap_free": 9_000 if i % 97 == 0 else 120_000,
                "rssi": -60, "cpu_pct": 20.0, "temp_c": 40.0 + i % 7,
                "reset_reason": "poweron", "errors": 0}), now)
        load_policy_file(registry, ROOT / "sample_data" / "policies.toml",
                         Actor("bench", "approver"))
        first_group = registry.group_tree()[0].name
        set_window(registry, first_group, "Sat 01:00-02:00 UTC", Actor("bench"))
        groups = sum(1 for _ in registry.group_tree())
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            cProfile.runctx("median_tick_ms(service, now + 5, 4)", globals(), locals(),
                            "/tmp/automation_tick.prof")
        with_automation, judging = median_tick_ms(service, now + 10, args.ticks)
        participants, gate = service.jobs.participants, service.jobs.release_gate
        service.jobs.participants, service.jobs.release_gate = [], None
        baseline, _ = median_tick_ms(service, now + 100, args.ticks)
        service.jobs.participants, service.jobs.release_gate = participants, gate
        registry.close()
    print(f"{args.devices} devices, {groups} root groups: the tick holds the lock "
          f"{with_automation:.1f} ms with automation judging every tick, {baseline:.1f} ms "
          f"without; the judging itself takes {judging:.0f} ms off the lock")
    print(json.dumps({"bench": "automation_tick", "metric": "tick_ms_with_automation",
                      "value": round(with_automation, 2), "baseline": round(baseline, 2),
                      "ratio": round(with_automation / baseline, 2) if baseline else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
