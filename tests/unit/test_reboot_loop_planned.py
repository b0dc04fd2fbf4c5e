"""Planned restarts are not a crash loop, and a rollout wave judges only its own resets."""

from __future__ import annotations

from fleet_tui.domain.health import RebootLoopDetector


def test_planned_restarts_do_not_make_a_reboot_loop() -> None:
    d = RebootLoopDetector(window_s=600, min_resets=3)
    d.observe(0, 100)
    for i, t in enumerate((10, 20, 30)):  # three OTA applies in a row
        assert d.observe(t, 5 + i, planned=True) is True  # still a reset for error deltas
        d.observe(t + 1, 50 + i)
    assert not d.in_loop(40)
    for t in (50, 60, 70):  # three crashes
        d.observe(t, 1)
        d.observe(t + 1, 5)
    assert d.in_loop(80)


def test_resets_before_a_wave_started_do_not_count_for_it() -> None:
    d = RebootLoopDetector(window_s=600, min_resets=3)
    d.observe(0, 100)
    for t in (10, 20, 30):
        d.observe(t, 1)
        d.observe(t + 1, 5)
    assert d.in_loop(40) and not d.in_loop_since(40, since=35)
    assert d.in_loop_since(40, since=0)
