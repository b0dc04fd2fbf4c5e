"""Rollouts in every state the monitor shows, made by the real service functions and the
real RolloutEngine at a fixed clock, for snapshots and flows without a broker.

The jobs engine's in-memory view of the fleet (presence, latest telemetry, reboot loops,
shadows) is what the gates read; ``FleetFacts`` holds it for the seeded devices (all
online and healthy), and executions move as the jobs engine would move them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from fleet_tui.domain.jobs import FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, JobSettings
from fleet_tui.domain.rollout import Gates, WaveSpec
from fleet_tui.registry.registry import Registry
from fleet_tui.registry.rollouts_store import RolloutRow
from fleet_tui.service.job_control import Actor
from fleet_tui.service.rollouts import RolloutEngine, act, plan_rollout, start_rollout
from tests.tui.conftest import CLOCK

GROUP = "bos-1-l3"  # 58 devices over three hardware revisions
ALICE = Actor("alice", "approver")
BOB = Actor("bob", "approver")


@dataclass
class _Presence:
    online: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Telemetry:
    latest: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    loops: dict[str, Any] = field(default_factory=dict)


@dataclass
class FleetFacts:
    """What the jobs engine knows of the devices in memory (all online and healthy)."""

    presence: _Presence = field(default_factory=_Presence)
    telemetry: _Telemetry = field(default_factory=_Telemetry)

    @classmethod
    def healthy(cls, device_ids: list[str]) -> FleetFacts:
        facts = cls()
        for i, d in enumerate(device_ids):
            facts.presence.online[d] = True
            facts.telemetry.latest[d] = ("healthy", {
                "heap_free": 150_000 + 100 * (i % 5), "cpu_pct": 12.0 + i % 3,
                "temp_c": 41.0 + (i % 4) * 0.5})
        return facts

    class shadows:
        @staticmethod
        def document(thing: str) -> None:
            return None

        @staticmethod
        def peek(thing: str) -> None:  # any worker's shadow (scale-out); none are seeded
            return None


@contextmanager
def frozen(monkeypatch: pytest.MonkeyPatch, at: float = CLOCK) -> Iterator[None]:
    """Fixed wall clock while seeding: audit times and rollout times are stable."""
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: at)
        yield


class Seeder:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        members = [r.id for r in registry.list_devices(group=GROUP, limit=1000)]
        self.facts = FleetFacts.healthy(members)
        self.engine = RolloutEngine(registry, self)
        self.hw = {r.id: r.hardware_rev for r in registry.list_devices(group=GROUP,
                                                                       limit=1000)}

    # RolloutEngine reads these off "the jobs engine"
    @property
    def presence(self) -> _Presence:
        return self.facts.presence

    @property
    def telemetry(self) -> _Telemetry:
        return self.facts.telemetry

    shadows = FleetFacts.shadows

    def start(self, release: str, rollout_id: str, *, waves: str = "10,50,100",
              two_person: bool = False, metrics: tuple[Any, ...] = ()) -> RolloutRow:
        gates = Gates(soak_s=60, two_person=two_person, metrics=metrics)
        plan = plan_rollout(self.registry, release, GROUP, spec=WaveSpec.parse(waves),
                            gates=gates, rollout_id=rollout_id,
                            job_settings=JobSettings(concurrency=20, rate_per_minute=60,
                                                     soak_s=60))
        return start_rollout(self.registry, plan, ALICE, confirm=release)

    def progress(self, rollout_id: str, *, fail_hw: str | None = None,
                 running: int = 0, release: str | None = None) -> None:
        """The current wave's devices take the update: those on ``fail_hw`` crash-loop and
        roll themselves back; the last ``running`` stay in progress (downloading/applying)."""
        rollout = self.registry.rollouts.get(rollout_id)
        wave = rollout.wave
        assert wave is not None and wave.job_id
        ids = list(wave.device_ids)
        done = ids[:len(ids) - running] if running else ids
        with self.registry.locked() as conn:
            self.registry.jobs.transition(conn, wave.job_id, ids, [QUEUED], IN_PROGRESS,
                                          CLOCK)
            results = []
            for d in done:
                if fail_hw and self.hw[d] == fail_hw:
                    results.append((d, FAILED, {"reason": "rolled back to 2.2.0 after running "
                                                f"{rollout.release_version}"}))
                else:
                    results.append((d, SUCCEEDED, {"firmware_version":
                                                   rollout.release_version}))
            self.registry.jobs.finish_many(conn, wave.job_id, results, IN_PROGRESS, CLOCK)
            phases = {d: {"phase": "downloading" if i % 2 else "applying"}
                      for i, d in enumerate(ids[len(done):])}
            self.registry.jobs.set_details(conn, wave.job_id, phases, CLOCK)
        updated = {d: {"firmware_version": release or rollout.release_version,
                       "hardware_rev": self.hw[d]}
                   for d, status, _ in results if status == SUCCEEDED}
        if fail_hw:  # the crashing devices ran the release before rolling back
            updated.update({d: {"firmware_version": rollout.release_version,
                                "hardware_rev": self.hw[d]}
                            for d, status, _ in results if status == FAILED})
        self.registry.apply_reported(updated)

    def judge(self) -> None:
        with self.registry.locked() as conn:
            self.engine.tick(conn, CLOCK, None)

    def finish_rollback(self, rollout_id: str) -> None:
        job_id = f"{rollout_id}-rollback"
        with self.registry.locked() as conn:
            ids = [e.device_id for e in self.registry.jobs.executions(job_id, conn=conn)]
            self.registry.jobs.transition(conn, job_id, ids, [QUEUED], IN_PROGRESS, CLOCK)
            self.registry.jobs.finish_many(conn, job_id, [(d, SUCCEEDED, {}) for d in ids],
                                           IN_PROGRESS, CLOCK)
            self.registry.jobs.set_status(conn, job_id, "COMPLETED", "", CLOCK)
        self.judge()


def seed(registry: Registry, state: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A rollout in ``state``; returns its id."""
    s = Seeder(registry)
    with frozen(monkeypatch):
        if state in ("halted", "rolled_back"):
            r = s.start("2.4.0", "rollout-2.4.0-bad-canary")
            s.progress(r.id, fail_hw="rev-b")
            s.judge()
            if state == "rolled_back":
                act(registry, r.id, "rollback", ALICE, reason="rev-b crash loop")
                s.finish_rollback(r.id)
            return r.id
        from fleet_tui.domain.rollout import MetricGate

        r = s.start("2.4.1", "rollout-2.4.1-fixed", waves="10,100" if state == "completed"
                    else "10,50,100", two_person=state == "two_person",
                    metrics=(MetricGate("heap_free", min_ratio=0.8),))
        if state == "running":
            s.progress(r.id, running=3)
            s.judge()
            return r.id
        s.progress(r.id)
        s.judge()
        if state in ("waiting_approval",):
            return r.id
        act(registry, r.id, "approve", ALICE)
        if state == "two_person":
            s.progress(r.id)
            s.judge()
            act(registry, r.id, "approve", ALICE)
            return r.id
        s.progress(r.id)
        s.judge()
        return r.id
