"""Bulk jobs end to end: the engine and the AWS IoT Jobs MQTT API against simulated
devices through a real mosquitto; timeouts, retries, abort criteria, cancel with and
without force, the rate limit across a restart, and kill -9 of `fleet-tui serve`; every
scenario on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_tui.domain.jobs import AbortCriterion, JobSettings
from fleet_tui.service.job_control import Actor, Target, cancel_job, create_job, plan_job
from tests.integration.engine_rig import EngineRig, engine_rig, firmware_server
from tests.integration.mosquitto import Mosquitto

OPS = Actor("olga", "operator")


@pytest.fixture
def base_url() -> Iterator[str]:
    with firmware_server() as url:
        yield url


def _job(rig: EngineRig, job_type: str, params: dict, ids: list[str] | None = None,  # type: ignore[type-arg]
         **settings: object) -> str:
    target = Target(device_ids=tuple(ids)) if ids else Target(group="plant")
    plan = plan_job(rig.registry, job_type, params, target, JobSettings(**settings))  # type: ignore[arg-type]
    create_job(rig.registry, plan, OPS)
    return plan.job_id


def _counts(rig: EngineRig, job_id: str) -> dict[str, int]:
    return rig.registry.jobs.counts([job_id])[job_id]


async def test_reboot_and_diagnostic_jobs_succeed_through_the_jobs_api(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        await rig.start_fleet()
        reboot = _job(rig, "reboot", {}, concurrency=4)
        diag = _job(rig, "diagnostic", {})
        await rig.until(lambda: _counts(rig, reboot).get("SUCCEEDED") == 12
                        and _counts(rig, diag).get("SUCCEEDED") == 12, 60, "both jobs")
        await rig.until(lambda: rig.registry.jobs.get(reboot).status == "COMPLETED", 10,
                        "job completion")
        e = rig.registry.jobs.executions(diag)[0]
        assert e.status_details is not None and "heap_free" in e.status_details
        rebooted = rig.registry.jobs.executions(reboot)[0]
        assert rebooted.status_details == {"reset_reason": "sw_reboot"}
        assert rebooted.attempt == 0  # started once, finished once


async def test_failures_retry_then_abort_cancels_the_queue(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        await rig.start_fleet()
        # A failing command, one retry, abort when > 50% failed after 3: with 2 in flight at
        # a time the abort comes while most executions are still queued.
        job = _job(rig, "command", {"command": "fail"}, concurrency=2, retries=1,
                   retry_on=("FAILED",),
                   abort=(AbortCriterion("FAILED", 50.0, 3),))
        await rig.until(lambda: rig.registry.jobs.get(job).status == "ABORTED", 60, "abort")
        row = rig.registry.jobs.get(job)
        assert "FAILED" in row.reason and "50%" in row.reason
        execs = rig.registry.jobs.executions(job)
        failed = [e for e in execs if e.status == "FAILED"]
        assert len(failed) >= 3 and all(e.attempt == 1 for e in failed)  # retried once each
        assert sum(e.status == "CANCELED" for e in execs) >= 5
        assert not any(e.status == "QUEUED" for e in execs)
        assert rig.registry.audit.entries(action="job.abort")[0].actor == "engine"


async def test_timeouts_retries_and_cancel_with_and_without_force(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        # No device is online: firmware executions start (desired state written) and time
        # out; one retry each, then TIMED_OUT for good. Never a false success.
        ids = ["dev-000", "dev-001"]
        timed = _job(rig, "firmware_update", {"release": "2.4.1"}, ids, timeout_s=0.6,
                     retries=1, retry_on=("TIMED_OUT",))
        await rig.until(lambda: _counts(rig, timed).get("TIMED_OUT") == 2
                        and rig.registry.jobs.get(timed).status == "COMPLETED", 30, "timeouts")
        assert all(e.attempt == 1 for e in rig.registry.jobs.executions(timed))
        assert rig.desired("dev-000")["target_version"] == "2.4.1"

        # Cancel without force: queued ones are canceled, the one in progress runs on.
        ids = [f"dev-{i:03d}" for i in range(2, 8)]
        job = _job(rig, "firmware_update", {"release": "2.4.1"}, ids, concurrency=1,
                   timeout_s=120)
        await rig.until(lambda: _counts(rig, job).get("IN_PROGRESS") == 1, 10, "one started")
        result = cancel_job(rig.registry, job, OPS)
        assert (result.canceled_queued, result.left_in_progress) == (5, 1)
        assert "keep running" in result.explain()
        running = [e.device_id for e in rig.registry.jobs.executions(job)
                   if e.status == "IN_PROGRESS"]
        assert len(running) == 1
        # The canceled job's in-progress device still converges and is counted.
        await rig.start_fleet(running)
        await rig.until(lambda: _counts(rig, job).get("SUCCEEDED") == 1, 60,
                        "the in-progress device to finish")
        await rig.fleet.stop()  # type: ignore[union-attr]

        # With force the in-progress one is canceled too and its desired OTA state cleared.
        job = _job(rig, "firmware_update", {"release": "2.4.1"}, ["dev-010", "dev-011"],
                   concurrency=1, timeout_s=120)
        await rig.until(lambda: _counts(rig, job).get("IN_PROGRESS") == 1, 10, "one started")
        thing = next(e.device_id for e in rig.registry.jobs.executions(job)
                     if e.status == "IN_PROGRESS")
        await rig.until(lambda: rig.desired(thing).get("target_version") == "2.4.1", 10,
                        "desired OTA state")
        result = cancel_job(rig.registry, job, OPS, force=True)
        assert (result.canceled_queued, result.canceled_in_progress) == (1, 1)
        await rig.until(lambda: "target_version" not in rig.desired(thing), 10,
                        "desired OTA state cleared")
        assert _counts(rig, job) == {"CANCELED": 2}


async def test_rate_limit_holds_across_an_engine_restart(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        job = _job(rig, "firmware_update", {"release": "2.4.1"}, rate_per_minute=3,
                   timeout_s=600)

        def notified() -> int:
            return sum(1 for e in rig.registry.jobs.executions(job) if e.notified_at)

        await rig.until(lambda: notified() == 3, 10, "three started")
        await asyncio.sleep(1.0)
        assert notified() == 3
        await rig.stop_service()
        await rig.start_service()  # a new engine: it counts the durable start times
        await asyncio.sleep(1.5)
        assert notified() == 3


async def test_a_release_over_the_per_tick_cap_goes_on_at_once_in_the_next_ticks(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    # With a 60 s tick only the cap's continuation ticks can release the rest in time.
    async with engine_rig(mosquitto, db_url, tmp_path, base_url,
                          tick_s=60.0) as rig:
        rig.settings.jobs.max_release_per_tick = 5
        job = _job(rig, "firmware_update", {"release": "2.4.1"}, timeout_s=600)
        await rig.start_service()  # its first tick starts the release
        executions = await rig.until(
            lambda: all(e.notified_at for e in es) and es
            if (es := rig.registry.jobs.executions(job)) else None, 15, "all 12 released")
        ticks = sorted({e.notified_at for e in executions})
        assert len(ticks) == 3  # 5 + 5 + 2
        by_tick = [sorted(e.seq for e in executions if e.notified_at == t) for t in ticks]
        assert [len(b) for b in by_tick] == [5, 5, 2]
        assert by_tick[0][-1] < by_tick[1][0] < by_tick[2][0]  # in queue order
        assert len(rig.service.jobs.watch) == 12 if rig.service else False
        # Each step after the first ran ahead, in its thread, while the one before it was
        # sent: every released device still gets its desired state.
        await rig.until(lambda: all(rig.desired(e.device_id).get("target_version") == "2.4.1"
                                    for e in executions), 10, "every desired state")
        # Everything released: no more ticks back to back while the 12 are in flight (a
        # cap-sized budget with nothing left to release once kept the engine spinning).
        assert rig.service is not None
        ticks = rig.service.jobs.stats["ticks"]
        await asyncio.sleep(1.0)
        assert rig.service.jobs.stats["ticks"] - ticks <= 1


def _serve(rig: EngineRig, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLEET_TUI_CONFIG": str(log.parent / "engine.toml")}
    (log.parent / "engine.toml").write_text(
        f'db = "{rig.settings.db}"\nbroker = "{rig.broker.url}"\n'
        f'[jobs]\ntick_s = 0.2\nlease_ttl_s = 2.0\nfirmware_base_url = '
        f'"{rig.settings.jobs.firmware_base_url}"\n'
        '[shadow]\nflush_interval_ms = 10\n[health]\ntelemetry_interval_s = 1.0\n')
    return subprocess.Popen([sys.executable, "-m", "fleet_tui.cli", "serve"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


async def test_kill_9_mid_job_then_restart_loses_nothing_and_starts_nothing_twice(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        log = tmp_path / "serve.log"
        proc = _serve(rig, log)
        try:
            await rig.until(lambda: "holds the engine lease" in log.read_text(), 20,
                            "serve to take the engine lease")
            await rig.start_fleet()
            job = _job(rig, "reboot", {}, concurrency=3)
            await rig.until(lambda: _counts(rig, job).get("SUCCEEDED", 0) >= 3, 60,
                            "some reboots done")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            before = _counts(rig, job)
            proc = _serve(rig, log)  # takes the lease once the dead holder's expires
            await rig.until(lambda: _counts(rig, job).get("SUCCEEDED") == 12, 90,
                            f"every reboot after the restart (before: {before})")
            execs = rig.registry.jobs.executions(job)
            assert all(e.attempt == 0 for e in execs)  # none started twice
            assert all(e.status_details == {"reset_reason": "sw_reboot"} for e in execs)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        assert "Traceback" not in log.read_text()


async def test_jobs_api_answers_like_aws_iot_jobs_including_errors(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    from fleet_tui.service.topics import Topics
    from tests.integration.service_harness import peer

    t = Topics()
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        thing = "dev-004"
        subs = [t.jobs(thing, "#")]
        async with peer(mosquitto.url, subs) as dev:
            async def ask(topic: str, body: object, suffix: str) -> dict:  # type: ignore[type-arg]
                dev.inbox.clear()
                await dev.publish(topic, body)
                _, payload = await dev.wait_for(lambda tp, p: tp.endswith(suffix), 10)
                return payload  # type: ignore[no-any-return]

            empty = await ask(t.jobs(thing, "start-next"), {"clientToken": "c1"},
                              "start-next/accepted")
            assert "execution" not in empty and empty["clientToken"] == "c1"
            bad = await ask(t.jobs(thing, "start-next"), b"{not json", "start-next/rejected")
            assert bad["code"] == "InvalidJson"
            job = _job(rig, "diagnostic", {}, [thing])
            _, note = await dev.wait_for(lambda tp, p: tp.endswith("notify-next"), 10)
            assert note["execution"]["jobId"] == job
            listed = await ask(t.jobs(thing, "get"), {}, "jobs/get/accepted")
            assert [j["jobId"] for j in listed["queuedJobs"]] == [job]
            started = await ask(t.jobs(thing, "start-next"), {"clientToken": "c2"},
                                "start-next/accepted")
            execution = started["execution"]
            assert execution["status"] == "IN_PROGRESS"
            assert execution["jobDocument"] == {"operation": "diagnostic"}
            again = await ask(t.jobs(thing, "start-next"), {}, "start-next/accepted")
            assert again["execution"]["jobId"] == job  # the same one, not started twice
            stale = await ask(t.jobs(thing, job, "update"),
                              {"status": "SUCCEEDED", "expectedVersion": 1},
                              f"{job}/update/rejected")
            assert stale["code"] == "VersionMismatch"
            done = await ask(t.jobs(thing, job, "update"),
                             {"status": "SUCCEEDED", "statusDetails": {"ok": "1"},
                              "expectedVersion": execution["versionNumber"]},
                             f"{job}/update/accepted")
            assert done["executionState"]["status"] == "SUCCEEDED"
            late = await ask(t.jobs(thing, job, "update"), {"status": "FAILED"},
                             f"{job}/update/rejected")
            assert late["code"] == "TerminalStateReached"
            unknown = await ask(t.jobs(thing, "nope", "update"), {"status": "SUCCEEDED"},
                                "nope/update/rejected")
            assert unknown["code"] == "ResourceNotFound"
            queued = await ask(t.jobs(thing, job, "update"), {"status": "QUEUED"},
                               f"{job}/update/rejected")
            assert queued["code"] == "TerminalStateReached"
            got = await ask(t.jobs(thing, job, "get"), {}, f"{job}/get/accepted")
            assert got["execution"]["statusDetails"] == {"ok": "1"}
        assert _counts(rig, job) == {"SUCCEEDED": 1}
