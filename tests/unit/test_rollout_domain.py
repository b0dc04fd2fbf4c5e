"""Wave planning, gates and the rollout state machine (domain/rollout.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_tui.domain.rollout import (
    COMPLETED,
    HALTED,
    RUNNING,
    WAITING_APPROVAL,
    CohortFacts,
    Gates,
    MetricGate,
    PlanDevice,
    RolloutError,
    WaveSpec,
    check_action,
    evaluate_wave,
    plan_waves,
)

devices_st = st.lists(
    st.builds(PlanDevice, id=st.text("abcdef0123456789", min_size=1, max_size=8),
              hardware_rev=st.sampled_from(["rev-a", "rev-b", "rev-c"]),
              site=st.sampled_from(["s1", "s2", "s3", None]),
              ring=st.sampled_from(["canary", "early", "general", None]),
              skip=st.sampled_from([None, None, None, "unsupported"])),
    min_size=1, max_size=300, unique_by=lambda d: d.id,
).filter(lambda ds: any(d.skip is None for d in ds))


@settings(max_examples=150, deadline=None)
@given(devices_st, st.sampled_from([(1.0, 10.0, 50.0, 100.0), (10.0, 100.0), (100.0,),
                                    (5.0, 25.0, 100.0)]))
def test_percentage_plan_partitions_the_eligible_devices_deterministically(
        devices: list[PlanDevice], percentages: tuple[float, ...]) -> None:
    spec = WaveSpec(percentages)
    plan = plan_waves(devices, spec, seed="2.4.0/g")
    ids = [d for w in plan.waves for d in w.device_ids]
    eligible = {d.id for d in devices if d.skip is None}
    assert len(ids) == len(set(ids)) and set(ids) == eligible  # none lost, none twice
    assert {d for d, _ in plan.skipped} == {d.id for d in devices if d.skip}
    assert plan_waves(list(reversed(devices)), spec, seed="2.4.0/g") == plan  # order-free
    # Cumulative sizes reach at least each percentage of the eligible devices.
    done = 0
    cumulative = {w.name: 0 for w in plan.waves}
    for w in plan.waves:
        done += len(w.device_ids)
        cumulative[w.name] = done
    first = plan.waves[0]
    revs = {d.hardware_rev for d in devices if d.skip is None}
    by_id = {d.id: d for d in devices}
    assert {by_id[d].hardware_rev for d in first.device_ids} == revs  # canary: every rev
    assert len(first.device_ids) >= min(len(eligible), math.ceil(len(eligible) *
                                                                  percentages[0] / 100))


def test_waves_are_stratified_by_hardware_and_site() -> None:
    devices = [PlanDevice(f"d{i:04d}", ("rev-a", "rev-b", "rev-c")[i % 3], f"site-{i % 4}")
               for i in range(1200)]
    plan = plan_waves(devices, WaveSpec((10.0, 50.0, 100.0)), seed="x")
    early = plan.waves[0]
    assert len(early.device_ids) == 120
    # Every (hardware) and (site) share within a device of its proportion.
    assert all(abs(n - 40) <= 1 for n in early.by_hardware.values())
    assert all(abs(n - 30) <= 1 for n in early.by_site.values())
    assert plan.waves[0].name == "canary" and plan.waves[-1].name == "all"


def test_tag_waves_follow_the_ring_and_unknown_rings_go_last() -> None:
    devices = [PlanDevice("a", "rev-a", "s", "canary"), PlanDevice("b", "rev-a", "s", "early"),
               PlanDevice("c", "rev-a", "s", None), PlanDevice("d", "rev-b", "s", "general")]
    plan = plan_waves(devices, WaveSpec.parse("tag:deployment_ring=canary,early,general"),
                      seed="s")
    assert [(w.name, sorted(w.device_ids)) for w in plan.waves] == [
        ("canary", ["a"]), ("early", ["b"]), ("general", ["c", "d"])]


@pytest.mark.parametrize("text, problem", [
    ("10,5,100", "increase"), ("1,10,50", "100%"), ("x,y", "percentages"),
    ("tag:ring", "tag:KEY"), ("0,100", "increase")])
def test_bad_wave_specs_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(RolloutError, match=problem):
        WaveSpec.parse(text)


def test_no_eligible_device_is_an_error_with_the_skip_count() -> None:
    with pytest.raises(RolloutError, match="1 skipped"):
        plan_waves([PlanDevice("a", "rev-a", None, skip="unsupported")], WaveSpec(), seed="s")


def _facts(n: int, *, online: bool = True, loop: bool = False, heap: float = 100_000.0
           ) -> list[CohortFacts]:
    return [CohortFacts(online, loop, False, {"heap_free": heap}) for _ in range(n)]


def test_error_gate_halts_at_once_even_with_devices_in_flight() -> None:
    v = evaluate_wave(Gates(error_threshold=0.1), "canary",
                      {"FAILED": 1, "IN_PROGRESS": 5, "SUCCEEDED": 1}, [], [])
    assert v.decision == "halt" and "1 of 7" in v.reason and v.evidence["failed"] == 1


def test_health_gate_compares_the_updated_cohort_with_the_rest() -> None:
    gates = Gates(max_offline_delta=0.2, metrics=(MetricGate("heap_free", min_ratio=0.8),))
    counts = {"SUCCEEDED": 5}
    offline = evaluate_wave(gates, "early", counts,
                            _facts(3, online=False) + _facts(2), _facts(10))
    assert offline.decision == "halt" and "offline rate 60%" in offline.reason
    assert offline.evidence["health"]["offline_rate"]["updated"] == 0.6
    leak = evaluate_wave(gates, "early", counts, _facts(5, heap=50_000), _facts(10))
    assert leak.decision == "halt" and "heap_free" in leak.reason
    fine = evaluate_wave(gates, "early", counts, _facts(5), _facts(10))
    assert fine.decision == "pass"


def test_success_gate_passes_or_halts_once_every_execution_finished() -> None:
    gates = Gates(success_threshold=0.9, error_threshold=0.5)
    assert evaluate_wave(gates, "w", {"SUCCEEDED": 9, "IN_PROGRESS": 1}, [], []
                         ).decision == "continue"
    assert evaluate_wave(gates, "w", {"SUCCEEDED": 9, "TIMED_OUT": 1}, [], []
                         ).decision == "pass"
    low = evaluate_wave(gates, "w", {"SUCCEEDED": 8, "FAILED": 2}, [], [])
    assert low.decision == "halt" and "success gate" in low.reason


def test_state_machine_allows_only_what_the_state_permits() -> None:
    assert check_action("approve", WAITING_APPROVAL) == "start-next"
    with pytest.raises(RolloutError, match="cannot approve"):
        check_action("approve", RUNNING)
    assert check_action("halt", RUNNING) == "halt"
    with pytest.raises(RolloutError, match="cannot resume"):
        check_action("resume", RUNNING)
    assert check_action("resume", HALTED) == "resume"
    assert check_action("rollback", COMPLETED) == "rollback"
    with pytest.raises(RolloutError, match="cannot cancel"):
        check_action("cancel", COMPLETED)
    with pytest.raises(RolloutError, match="unknown action"):
        check_action("promote", RUNNING)


def test_two_person_rule_needs_two_different_operators_for_the_final_wave() -> None:
    kw = {"final_wave_next": True, "two_person": True}
    assert check_action("approve", WAITING_APPROVAL, actor="alice", **kw) == "approval"
    with pytest.raises(RolloutError, match="second operator"):
        check_action("approve", WAITING_APPROVAL, approvals=["alice"], actor="alice", **kw)
    assert check_action("approve", WAITING_APPROVAL, approvals=["alice"], actor="bob",
                        **kw) == "start-next"
    # Not the final wave: one approval is enough.
    assert check_action("approve", WAITING_APPROVAL, actor="alice", final_wave_next=False,
                        two_person=True) == "start-next"


def test_gates_round_trip_and_reject_bad_values() -> None:
    g = Gates(metrics=(MetricGate("cpu_pct", max_ratio=1.5),), two_person=True)
    assert Gates.from_dict(g.to_dict()) == g
    with pytest.raises(RolloutError, match="error_threshold"):
        Gates(error_threshold=1.5)
    with pytest.raises(RolloutError, match="unknown field"):
        Gates.from_dict({"soak": 3})
