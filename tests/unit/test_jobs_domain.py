"""Job settings, the release budget, abort criteria, device transitions and capability
gating (domain/jobs.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_tui.domain.jobs import (
    AbortCriterion,
    JobError,
    JobSettings,
    RampUp,
    ReleaseFacts,
    TargetFacts,
    abort_reason,
    device_transition,
    job_document,
    skip_reason,
)

RELEASES = {
    "2.1.2": ReleaseFacts("2.1.2", ("rev-a", "rev-b", "rev-c"), ("led_is_on",
                                                                  "telemetry_interval_s")),
    "2.3.0": ReleaseFacts("2.3.0", ("rev-b", "rev-c"), ("led_is_on", "log_level",
                                                         "telemetry_interval_s")),
}


@given(st.integers(1, 500), st.integers(0, 500), st.integers(0, 500),
       st.one_of(st.none(), st.integers(1, 1000)))
def test_release_budget_never_exceeds_concurrency_or_rate(
        concurrency: int, in_flight: int, started: int, rate: int | None) -> None:
    s = JobSettings(concurrency=concurrency, rate_per_minute=rate)
    budget = s.release_budget(in_flight, started, 0, 0)
    assert 0 <= budget <= max(0, concurrency - in_flight)
    if rate is not None:
        assert started + budget <= max(rate, started)


def test_ramp_up_grows_exponentially_and_stops_at_the_maximum() -> None:
    s = JobSettings(concurrency=10_000, rate_per_minute=100,
                    ramp_up=RampUp(base_per_minute=10, factor=2.0, every=10))
    assert s.current_rate(0, 0) == 10
    assert s.current_rate(10, 0) == 20
    assert s.current_rate(35, 0) == 80
    assert s.current_rate(1000, 0) == 100
    by_success = JobSettings(ramp_up=RampUp(5, 3.0, 2, on="succeeded"))
    assert by_success.current_rate(100, 4) == 45


def test_abort_criteria_need_a_minimum_of_finished_executions() -> None:
    s = JobSettings(abort=(AbortCriterion("FAILED", 20.0, 10),))
    assert abort_reason(s, {"FAILED": 5, "SUCCEEDED": 4}) is None  # only 9 finished
    reason = abort_reason(s, {"FAILED": 5, "SUCCEEDED": 5})
    assert reason is not None and "5 of 10" in reason and "50.0%" in reason
    assert abort_reason(JobSettings(abort=(AbortCriterion("ALL", 30.0, 2),)),
                        {"TIMED_OUT": 1, "REJECTED": 1, "SUCCEEDED": 2}) is not None


@pytest.mark.parametrize("kwargs, field", [
    ({"concurrency": 0}, "concurrency"), ({"retries": 11}, "retries"),
    ({"rate_per_minute": 0}, "rate_per_minute"), ({"retry_on": ("CANCELED",)}, "retry_on"),
    ({"abort": (AbortCriterion("FAILED", 120.0, 1),)}, "percentage"),
    ({"timeout_s": -1.0}, "timeout_s")])
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(JobError, match=field):
        JobSettings(**kwargs)


def test_settings_round_trip_through_their_stored_form() -> None:
    s = JobSettings(concurrency=5, rate_per_minute=60, ramp_up=RampUp(1, 2.0, 3),
                    retries=2, abort=(AbortCriterion("TIMED_OUT", 10.0, 4),), soak_s=30)
    assert JobSettings.from_dict(s.to_dict()) == s
    with pytest.raises(JobError, match="unknown field"):
        JobSettings.from_dict({"concurency": 3})
    for bad in ({"abort": 5}, {"abort": ["x"]}, {"ramp_up": {"base": 1}}, {"retry_on": 3},
                {"concurrency": "many"}):
        with pytest.raises(JobError, match="settings"):
            JobSettings.from_dict(bad)


def test_devices_cannot_leave_a_terminal_state_or_set_queued() -> None:
    assert device_transition("QUEUED", "IN_PROGRESS") is None
    assert device_transition("IN_PROGRESS", "SUCCEEDED") is None
    assert "already SUCCEEDED" in (device_transition("SUCCEEDED", "FAILED") or "")
    assert "cannot be set" in (device_transition("IN_PROGRESS", "CANCELED") or "")
    assert "cannot be set" in (device_transition("IN_PROGRESS", "QUEUED") or "")


def test_job_documents_are_validated() -> None:
    assert job_document("command", {"command": "led_on"}) == {"operation": "command",
                                                              "command": "led_on"}
    with pytest.raises(JobError, match="command"):
        job_document("command", {"command": "rm -rf"})
    with pytest.raises(JobError, match="config"):
        job_document("config_update", {})
    with pytest.raises(JobError, match="type"):
        job_document("reflash", {})


def test_capability_gating_explains_every_skip() -> None:
    fw = {"operation": "firmware_update", "release": "2.3.0"}
    assert "does not support hardware rev-a" in (
        skip_reason("firmware_update", fw, TargetFacts("d", "2.1.2", "rev-a"), RELEASES) or "")
    assert skip_reason("firmware_update", fw, TargetFacts("d", "2.1.2", "rev-b"),
                       RELEASES) is None
    assert "already runs" in (skip_reason("firmware_update", fw,
                                          TargetFacts("d", "2.3.0", "rev-b"), RELEASES) or "")
    cfg = {"operation": "config_update", "config": {"log_level": 2}}
    assert "2.1.2 does not understand log_level" in (
        skip_reason("config_update", cfg, TargetFacts("d", "2.1.2", "rev-a"), RELEASES) or "")
    assert skip_reason("config_update", cfg, TargetFacts("d", "2.3.0", "rev-b"),
                       RELEASES) is None
    assert "not in the manifest" in (
        skip_reason("config_update", cfg, TargetFacts("d", "9.9.9", "rev-b"), RELEASES) or "")
    assert skip_reason("reboot", {"operation": "reboot"}, TargetFacts("d", None, None),
                       RELEASES) is None
