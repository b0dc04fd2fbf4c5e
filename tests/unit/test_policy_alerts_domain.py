"""Policy definitions, held-for tracking, the rate limit, and alert deduplication."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_tui.domain.alerts import AlertSignal, offline_spike, reconcile
from fleet_tui.domain.policy import (
    HeldFor,
    PolicyError,
    PolicyRule,
    parse_duration,
    parse_policy_file,
    within_rate,
)
from fleet_tui.domain.query import DeviceRecord

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "policies.toml"


def test_the_shipped_policy_examples_parse() -> None:
    rules = parse_policy_file(tomllib.loads(SAMPLE.read_text()), str(SAMPLE))
    by_name = {r.name: r for r, _, _ in rules}
    diag = by_name["diagnose-unhealthy"]
    assert (diag.then, diag.held_s, diag.max_per_hour) == ("job", 600.0, 20)
    assert by_name["halt-rollouts-on-offline"].scope == "group"
    assert by_name["rollback-reboot-loop"].then == "rollback"


def test_condition_uses_the_query_language_and_health_facts() -> None:
    rule = PolicyRule.from_dict({"name": "loop", "when": "reboot_loop = true and "
                                 "updated_within_s < 3600", "then": "rollback"})
    looping = DeviceRecord("d1", reported={"reboot_loop": True, "updated_within_s": 120})
    old = DeviceRecord("d2", reported={"reboot_loop": True, "updated_within_s": 7200})
    never = DeviceRecord("d3", reported={"reboot_loop": True})
    assert [r.id for r in rule.query.filter([looping, old, never])] == ["d1"]


@pytest.mark.parametrize(("definition", "message"), [
    ({"name": "x y", "when": "online = true", "then": "alert"}, "policy name"),
    ({"name": "a", "when": "health = ", "then": "alert"}, "when: col"),
    ({"name": "a", "when": "online = true", "then": "explode"}, "then must be"),
    ({"name": "a", "scope": "group", "when": "offline_share > 0.2", "then": "rollback"},
     "then must be"),
    ({"name": "a", "when": "online = true", "then": "job"}, "needs job"),
    ({"name": "a", "when": "online = true", "then": "job",
      "job": {"type": "firmware_update"}}, "rollouts"),
    ({"name": "a", "when": "online = true", "then": "alert", "max_per_hour": 0},
     "max_per_hour"),
    ({"name": "a", "when": "online = true", "then": "alert", "for": "ten minutes"}, "for"),
    ({"name": "a", "when": "online = true", "then": "alert", "whenn": 1}, "unknown"),
])
def test_bad_definitions_say_which_field(definition: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PolicyError, match=message):
        PolicyRule.from_dict(definition)


def test_policy_file_errors_name_the_entry() -> None:
    with pytest.raises(PolicyError, match=r"#2: duplicate name 'a'"):
        parse_policy_file({"policy": [
            {"name": "a", "when": "online = true", "then": "alert"},
            {"name": "a", "when": "online = false", "then": "alert"}]})


def test_durations() -> None:
    assert parse_duration("10m", "for") == 600
    assert parse_duration("1.5h", "for") == 5400
    assert parse_duration(30, "for") == 30


def test_held_for_fires_once_after_the_duration_and_again_after_clearing() -> None:
    held = HeldFor()
    assert held.update({"d1"}, 0, 600, 3600) == []
    assert held.update({"d1"}, 599, 600, 3600) == []
    assert held.update({"d1"}, 600, 600, 3600) == ["d1"]
    held.mark_fired("d1", 600)
    assert held.update({"d1"}, 900, 600, 3600) == []  # still the same episode
    assert held.update(set(), 1000, 600, 3600) == []  # cleared
    assert held.update({"d1"}, 1100, 600, 3600) == []  # a new episode starts over
    assert held.update({"d1"}, 1700, 600, 3600) == ["d1"]


@given(st.lists(st.floats(min_value=0, max_value=10_000), max_size=50),
       st.integers(min_value=1, max_value=30), st.floats(min_value=0, max_value=10_000))
def test_rate_limit_never_allows_more_than_the_limit_in_an_hour(
        fired: list[float], limit: int, now: float) -> None:
    allowed = within_rate(fired, limit, now)
    recent = sum(1 for t in fired if now - t < 3600)
    assert recent + allowed <= max(limit, recent)  # firing all allowed stays in the limit
    assert allowed > 0 or recent >= limit  # and nothing is held back below it


def test_alerts_deduplicate_and_resolve_only_their_own_kinds() -> None:
    spike = AlertSignal("offline_spike", "plant", "critical", "50% offline", "plant")
    again = AlertSignal("offline_spike", "plant", "critical", "60% offline", "plant")
    plan = reconcile([], [spike, again], ["offline_spike"])
    assert [s.message for s in plan.raise_new] == ["50% offline"] and not plan.refresh
    plan = reconcile([spike.key, "policy::p/d1"], [again], ["offline_spike"])
    assert plan.refresh == [again] and not plan.raise_new and not plan.resolve
    plan = reconcile([spike.key, "policy::p/d1"], [], ["offline_spike"])
    assert plan.resolve == [spike.key]  # the policy's alert is not the health sweep's


def test_offline_spike_needs_enough_devices() -> None:
    assert offline_spike(0.5, 10, threshold=0.2)
    assert not offline_spike(0.5, 4, threshold=0.2)
    assert not offline_spike(0.2, 10, threshold=0.2)
