"""Phased rollouts end to end: the real service and engine, mosquitto, simulated devices
that download real images, reboot, crash-loop and roll themselves back; on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_tui.domain.jobs import JobSettings
from fleet_tui.domain.roles import RoleError
from fleet_tui.domain.rollout import (
    COMPLETED,
    HALTED,
    ROLLED_BACK,
    WAITING_APPROVAL,
    Gates,
    RolloutError,
    WaveSpec,
)
from fleet_tui.service.job_control import Actor
from fleet_tui.service.rollouts import act, plan_rollout, start_rollout
from tests.integration.engine_rig import engine_rig, firmware_server
from tests.integration.mosquitto import Mosquitto

ALICE = Actor("alice", "approver")
BOB = Actor("bob", "approver")


@pytest.fixture
def base_url() -> Iterator[str]:
    with firmware_server() as url:
        yield url


def _fw(rig, thing: str) -> str | None:  # type: ignore[no-untyped-def]
    return rig.reported(thing).get("firmware_version")


async def test_bad_canary_halts_itself_with_evidence_and_rolls_back(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    # 2.4.0's image crash-loops on rev-b (its header says so); the canary holds every
    # hardware revision, so the rev-b canary device crash-loops, rolls back, and the error
    # gate halts the rollout before any other device is touched.
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        await rig.start_fleet()
        plan = plan_rollout(rig.registry, "2.4.0", "plant", spec=WaveSpec((10, 50, 100)),
                            gates=Gates(soak_s=1.0, error_threshold=0.10),
                            job_settings=JobSettings(timeout_s=60, soak_s=1.0))
        canary = set(plan.flight.waves[0].device_ids)
        revs = {r["id"]: r["hardware_rev"] for r in rig.rows}
        assert {revs[d] for d in canary} == {"rev-a", "rev-b", "rev-c"}
        with pytest.raises(RolloutError, match="type the release version"):
            start_rollout(rig.registry, plan, ALICE, confirm="2.4")
        rollout = start_rollout(rig.registry, plan, ALICE, confirm="2.4.0")

        halted = await rig.until(
            lambda: (r := rig.registry.rollouts.get(rollout.id)).status == HALTED and r, 60,
            "the canary to halt")
        assert "error gate" in halted.reason and "canary" in halted.reason
        wave = halted.waves[0]
        assert wave.status == "FAILED"
        assert wave.evidence is not None and wave.evidence["failed"] >= 1
        assert halted.waves[1].job_id is None  # nothing beyond the canary started
        job = rig.registry.jobs.executions(wave.job_id)
        failed = {e.device_id: e for e in job if e.status == "FAILED"}
        assert failed and all(revs[d] == "rev-b" for d in failed)
        assert any("rolled back" in str((e.status_details or {}).get("reason"))
                   for e in failed.values())
        # The other revisions were not touched: no desired OTA state outside the canary.
        for row in rig.rows:
            if row["id"] not in canary:
                assert "target_version" not in rig.desired(row["id"])
                assert _fw(rig, row["id"]) == "2.2.0"
        audit = rig.registry.audit.entries(action="rollout.halt")
        assert audit and audit[0].actor == "engine" and "evidence" in audit[0].details

        # Roll back: the canary devices that took 2.4.0 go back to 2.2.0, as a job.
        await rig.until(lambda: any(_fw(rig, d) == "2.4.0" for d in canary), 30,
                        "a canary device on 2.4.0")
        act(rig.registry, rollout.id, "rollback", ALICE, reason="rev-b crash loop")
        done = await rig.until(
            lambda: (r := rig.registry.rollouts.get(rollout.id)).status == ROLLED_BACK and r,
            60, "the rollback")
        assert "back on their previous version" in done.reason
        assert all(_fw(rig, d) == "2.2.0" for d in canary)
        assert rig.registry.audit.verify().ok


async def test_good_release_goes_through_every_wave_with_approvals_and_two_person_rule(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        await rig.start_fleet()
        plan = plan_rollout(rig.registry, "2.4.1", "plant", spec=WaveSpec((10, 50, 100)),
                            gates=Gates(soak_s=0.5, two_person=True),
                            job_settings=JobSettings(timeout_s=60, soak_s=0.5))
        rollout = start_rollout(rig.registry, plan, ALICE, confirm="2.4.1")
        for index in range(len(plan.flight.waves) - 1):
            await rig.until(lambda: rig.registry.rollouts.get(rollout.id).status
                            == WAITING_APPROVAL, 60, f"wave {index} to pass")
            if index == len(plan.flight.waves) - 2:  # the final wave: two operators
                act(rig.registry, rollout.id, "approve", ALICE)
                assert rig.registry.rollouts.get(rollout.id).status == WAITING_APPROVAL
                with pytest.raises(RolloutError, match="two-person"):
                    act(rig.registry, rollout.id, "approve", ALICE)
                act(rig.registry, rollout.id, "approve", BOB)
            else:
                act(rig.registry, rollout.id, "approve", ALICE)
        done = await rig.until(
            lambda: (r := rig.registry.rollouts.get(rollout.id)).status == COMPLETED and r,
            90, "the rollout to complete")
        assert all(w.status == "PASSED" for w in done.waves)
        assert all(_fw(rig, r["id"]) == "2.4.1" for r in rig.rows)
        approvals = rig.registry.audit.entries(action="rollout.approve")
        assert [a.actor for a in approvals][-2:] == ["alice", "bob"]
        assert rig.registry.audit.verify().ok


async def test_halt_and_resume_by_operator_stop_and_restart_new_devices(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        # Halting pauses the wave's job (nothing new starts); resuming releases again.
        await rig.start_fleet()
        plan = plan_rollout(rig.registry, "2.4.1", "plant", spec=WaveSpec((100,)),
                            gates=Gates(soak_s=0.2),
                            job_settings=JobSettings(concurrency=2, timeout_s=120,
                                                     soak_s=0.2))
        rollout = start_rollout(rig.registry, plan, ALICE, confirm="2.4.1")
        with pytest.raises(RoleError, match="viewer"):
            act(rig.registry, rollout.id, "halt", Actor("vera", "viewer"))
        act(rig.registry, rollout.id, "halt", Actor("olga", "operator"), reason="freeze")
        job_id = rig.registry.rollouts.get(rollout.id).waves[0].job_id
        assert rig.registry.jobs.get(job_id).status == "PAUSED"
        with pytest.raises(RolloutError, match="cannot approve"):
            act(rig.registry, rollout.id, "approve", ALICE)
        with pytest.raises(RoleError, match="needs 'approver'"):
            act(rig.registry, rollout.id, "rollback", Actor("olga", "operator"))
        def told() -> int:
            return sum(1 for e in rig.registry.jobs.executions(job_id) if e.notified_at)

        before = told()
        await asyncio.sleep(1.0)  # five engine ticks: a paused job starts nobody
        assert told() == before <= 2
        act(rig.registry, rollout.id, "resume", ALICE)
        await rig.until(lambda: rig.registry.jobs.counts([job_id])[job_id].get("SUCCEEDED",
                                                                               0) >= 2,
                        60, "devices updated after resume")
        actions = [e.action for e in rig.registry.audit.entries(action="rollout.*")]
        assert [a for a in actions if a != "rollout.wave.start"] == [
            "rollout.start", "rollout.halt", "rollout.resume"]
