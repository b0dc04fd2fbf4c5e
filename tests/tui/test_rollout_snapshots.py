"""Snapshots of the rollout wizard (each step, the plan, the typed confirmation), the
rollout monitor in each state (running, waiting for approval, the two-person rule, halted
with evidence, rolled back, completed), the jobs view (list, new job with the gating
preview, cancel) and the audit log (intact, broken), at 80x24 and 120x40. The rollouts are
made by the real service and engine at a fixed clock (``rollout_seed.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from fleet_tui.registry.audit import AUDIT
from fleet_tui.registry.registry import Registry
from fleet_tui.tui.screens.rollouts import RolloutMonitorScreen
from tests.tui.conftest import AppFactory
from tests.tui.rollout_seed import seed
from tests.tui.test_console_snapshots import (
    SIZES,
    NeverCalledWriter,
    SnapCompare,
    Step,
    app_of,
    keys,
    show_view,
    then,
)

TO_GROUP = (keys("n", "down", "down", "enter"),)  # release 2.3.0 (newest first)
TO_GATES = (*TO_GROUP, keys(*"bos-1-l3", "enter"))
TO_RATE = (*TO_GATES, keys(*["enter"] * 6))
TO_PLAN = (*TO_RATE, keys("enter", "enter", "enter"))


def monitor(rollout: str) -> Step:
    def step(pilot: Pilot[Any]) -> None:
        app = app_of(pilot)
        app.push_screen(RolloutMonitorScreen(app.registry, rollout, app.actor,
                                             clock=app.clock))

    return step


def tamper(registry: Registry) -> None:
    """Someone edits history: entry 2's actor."""
    with registry.engine.begin() as conn:
        conn.execute(AUDIT.update().where(AUDIT.c.id == 2).values(actor="mallory"))


WIZARD: dict[str, tuple[Step, ...]] = {
    "wizard_release": (show_view("rollouts"), keys("n")),
    "wizard_group": (show_view("rollouts"), *TO_GROUP, keys(*"bos-1")),
    "wizard_gates": (show_view("rollouts"), *TO_GATES),
    "wizard_gates_error": (show_view("rollouts"), *TO_GATES, keys("backspace", "x", "enter",
                                                                  *["enter"] * 5)),
    "wizard_rate": (show_view("rollouts"), *TO_RATE),
    "wizard_plan": (show_view("rollouts"), *TO_PLAN),
    "wizard_confirm": (show_view("rollouts"), *TO_PLAN, keys("s", *"2.3")),
}
# state -> (seeded rollout state or None, steps after the seed, extra registry change)
SEEDED: dict[str, tuple[str, Callable[[str], tuple[Step, ...]],
                        Callable[[Registry], None] | None]] = {
    "rollouts_list": ("rolled_back", lambda r: (show_view("rollouts"),), None),
    "monitor_running": ("running", lambda r: (monitor(r),), None),
    "monitor_waiting_approval": ("waiting_approval", lambda r: (monitor(r),), None),
    "monitor_two_person": ("two_person", lambda r: (monitor(r),), None),
    "monitor_halted": ("halted", lambda r: (monitor(r),), None),
    "monitor_rollback_confirm": ("halted", lambda r: (monitor(r), keys("R")), None),
    "monitor_rolled_back": ("rolled_back", lambda r: (monitor(r),), None),
    "monitor_completed": ("completed", lambda r: (monitor(r),), None),
    "jobs_list": ("rolled_back", lambda r: (show_view("jobs"),), None),
    "jobs_cancel": ("running", lambda r: (show_view("jobs"), keys("c")), None),
    "audit_intact": ("rolled_back", lambda r: (show_view("audit"),), None),
    "audit_broken": ("rolled_back", lambda r: (show_view("audit"),), tamper),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("state", list(WIZARD))
def test_rollout_wizard(snap_compare: SnapCompare, make_app: AppFactory, state: str,
                        size: tuple[int, int]) -> None:
    app = make_app(writer=NeverCalledWriter())
    assert snap_compare(app, terminal_size=size, run_before=then(*WIZARD[state]))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("state", list(SEEDED))
def test_rollout_console(snap_compare: SnapCompare, make_app: AppFactory, registry: Registry,
                         monkeypatch: pytest.MonkeyPatch, state: str,
                         size: tuple[int, int]) -> None:
    seeded, steps, change = SEEDED[state]
    rollout = seed(registry, seeded, monkeypatch)
    if change is not None:
        change(registry)
    app = make_app(writer=NeverCalledWriter())
    assert snap_compare(app, terminal_size=size, run_before=then(*steps(rollout)))


@pytest.mark.parametrize("size", SIZES)
def test_job_from_selection_with_gating_preview(snap_compare: SnapCompare,
                                                make_app: AppFactory,
                                                size: tuple[int, int]) -> None:
    steps = (keys("tab", "space", "down", "space", "down", "space", "b"),
             keys(*"firmware_update", "enter", *"release 2.3.0", *["enter"] * 6))
    assert snap_compare(make_app(writer=NeverCalledWriter()), terminal_size=size,
                        run_before=then(*steps))
