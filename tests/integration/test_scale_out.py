"""Scale-out: three `fleet-tui serve` workers on one PostgreSQL registry and one mosquitto
split the shadows by partition lease; kill -9 of one mid-load (the engine's holder) loses
no update, applies none twice, never moves a version backwards, and the rollout running
meanwhile completes on the worker that takes the engine lease over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_tui.domain.jobs import JobSettings
from fleet_tui.domain.rollout import COMPLETED, Gates, WaveSpec
from fleet_tui.registry.registry import Registry
from fleet_tui.service.job_control import Actor
from fleet_tui.service.partitions import WORKER_PREFIX
from fleet_tui.service.rollouts import plan_rollout, start_rollout
from tests.integration.engine_rig import engine_rig, firmware_server
from tests.integration.mosquitto import Mosquitto
from tests.integration.shadow_load import run_load
from tests.integration.workers import start_worker, stop_worker

PARTITIONS = 16


@pytest.fixture
def base_url() -> Iterator[str]:
    with firmware_server() as url:
        yield url


def _holders(registry: Registry) -> Counter[str]:
    now = time.time()
    return Counter(s.holder for s in registry.leases.live("shadow-part-", now))


async def test_three_workers_kill_9_one_mid_load(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, pg_url: str) -> None:
    async with engine_rig(mosquitto, pg_url, tmp_path, base_url) as rig:
        extra = ("[jobs]\ntick_s = 0.2\nlease_ttl_s = 2.0\n"
                 f'firmware_base_url = "{base_url}"\n[health]\ntelemetry_interval_s = 1.0\n')
        names = ["w0", "w1", "w2"]
        procs: dict[str, subprocess.Popen[bytes]] = {
            n: start_worker(n, pg_url, mosquitto.url, tmp_path, partitions=PARTITIONS,
                            lease_ttl_s=3.0, extra=extra) for n in names}
        try:
            # Fair shares: 16 partitions over three live workers, at most ceil(16/3) each.
            await rig.until(lambda: len(h := _holders(rig.registry)) == 3
                            and sum(h.values()) == PARTITIONS and max(h.values()) <= 6, 40,
                            "three workers to share the partitions")
            # The devices follow the retry contract too: a report that died with the
            # killed worker is sent again (same clientToken) to the partition's new owner.
            # A device confirms its new image once its boot report is accepted; its
            # deadline must outlast a failover (lease TTL 3 s + a 2 s retry, under load),
            # or it rolls back and the error gate halts the rollout, rightly (the cause of
            # the one stall seen in the two-worker suite, with the sim's 5 s).
            await rig.start_fleet(shadow_retry_s=2.0, confirm_timeout_s=20.0)
            plan = plan_rollout(rig.registry, "2.4.1", "plant", spec=WaveSpec((10, 50, 100)),
                                gates=Gates(soak_s=0.5, auto_advance=True),
                                job_settings=JobSettings(timeout_s=90, soak_s=0.5))
            rollout = start_rollout(rig.registry, plan, Actor("alice", "approver"),
                                    confirm="2.4.1")

            stop = asyncio.Event()
            things = [f"load-{i:02d}" for i in range(24)]
            load = asyncio.create_task(run_load(mosquitto.host, mosquitto.port, things, stop,
                                                retry_s=2.0, pause_s=0.02))
            # Kill once the canary passed: mid-rollout, a wave in flight.
            await rig.until(lambda: rig.registry.rollouts.get(rollout.id).current_wave >= 1,
                            60, "the canary wave to pass")
            # No grace for the wave's desired writes: one the dying engine (or a dying
            # partition owner) had not made durable is written again by the next engine.
            engine = rig.registry.leases.get("engine")
            assert engine is not None and engine.holder in procs
            victim = engine.holder
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait(10)
            # The survivors take the dead worker's partitions and the engine lease.
            await rig.until(lambda: sorted(_holders(rig.registry).values()) == [8, 8], 40,
                            "the survivors to take the dead worker's partitions")
            await asyncio.sleep(3)
            stop.set()
            result = await asyncio.wait_for(load, 60)

            new_engine = rig.registry.leases.get("engine")
            assert new_engine is not None and new_engine.holder != victim
            assert not any(s.holder == victim for s in rig.registry.leases.live(
                WORKER_PREFIX, time.time()))
            # Every update answered, each applied once, no version backwards.
            assert not result.unanswered
            total = sum(len(v) for v in result.sent.values())
            assert total > 200
            for thing, tokens in result.sent.items():
                versions = []
                for token in tokens:
                    accepted = {v for k, v in result.answers[token] if k == "accepted"}
                    assert len(accepted) == 1, (token, result.answers[token])  # applied once
                    if token not in result.retried:
                        assert len(result.answers[token]) == 1, (token, result.answers[token])
                    versions.append(accepted.pop())
                assert versions == list(range(1, len(tokens) + 1)), thing  # never backwards
                stored = rig.registry.get_shadow(thing)
                assert stored is not None and stored["version"] == len(tokens)
                assert stored["state"]["desired"]["seq"] == len(tokens) - 1
            assert result.retried, "the kill should have cost some requests a retry"
            try:
                await rig.until(lambda: rig.registry.rollouts.get(rollout.id).status
                                == COMPLETED, 120, "the rollout to complete after the failover")
            except AssertionError as err:
                stuck = rig.registry.rollouts.get(rollout.id)
                unfinished = {}
                for job in rig.registry.jobs.list_jobs():
                    for e in rig.registry.jobs.executions(job.id):
                        if e.status not in ("SUCCEEDED", "CANCELED"):
                            unfinished[e.device_id] = (job.id[-6:], e.status, e.status_details)
                raise AssertionError(f"{err}: status {stuck.status}, wave {stuck.current_wave},"
                                     f" unfinished executions {unfinished}") from None
        finally:
            for proc in procs.values():
                stop_worker(proc)
        for name in names:
            if name != victim:
                assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
