"""The console's collector pacing: survivors are frozen, frozen cycles are still reclaimed
by the periodic sweep, and stopping hands everything back to the collector."""

from __future__ import annotations

import asyncio
import gc
import weakref

from fleet_tui.gc_pacing import GcPacing, pace_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_freezes_survivors_and_the_sweep_reclaims_frozen_cycles() -> None:
    pacing = GcPacing(sweep_s=3600)
    gc.disable()  # no automatic collection between making the cycle and freezing it
    try:
        pacing.start()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        keep = [Node() for _ in range(1000)]
        pacing.step()
        assert gc.get_freeze_count() >= frozen + 1000  # the new survivors went permanent
        ref = _cycle()
        pacing.step()  # the cycle's garbage is frozen now: a collection cannot see it
        gc.collect()
        assert ref() is not None
        pacing.sweep_s = 0.0
        pacing.step()  # the sweep unfreezes and collects
        assert ref() is None
        assert keep[0].other is None
    finally:
        pacing.stop()
        gc.enable()
    assert gc.get_freeze_count() == 0


def test_full_collections_wait_for_the_pacing_and_come_back_after() -> None:
    before = gc.get_threshold()
    pacing = GcPacing()
    pacing.start()
    try:
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2] and full > 1_000_000  # only the sweep's
    finally:
        pacing.stop()
    assert gc.get_threshold() == before


def test_a_due_sweep_waits_for_quiet_but_not_past_twice_its_period() -> None:
    busy = [True]
    pacing = GcPacing(sweep_s=3600, quiet=lambda: not busy[0])
    gc.disable()
    try:
        pacing.start()
        ref = _cycle()
        pacing.step()  # frozen garbage now
        pacing._swept -= 3600  # due, but the operator is typing
        pacing.step()
        assert ref() is not None
        busy[0] = False
        pacing.step()
        assert ref() is None
        ref = _cycle()
        busy[0] = True
        pacing.step()
        pacing._swept -= 7200  # twice overdue: sweep anyway
        pacing.step()
        assert ref() is None
    finally:
        pacing.stop()
        gc.enable()


def test_inactive_pacing_leaves_the_collector_alone() -> None:
    pacing = GcPacing()
    pacing.step()
    assert gc.get_freeze_count() == 0
    pacing.stop()


async def test_serve_paces_on_its_event_loop_until_stopped() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(pace_gc(stop, GcPacing(freeze_s=0.01)))
    await asyncio.sleep(0.05)
    assert gc.get_freeze_count() > 0
    stop.set()
    await asyncio.wait_for(task, 2)
    assert gc.get_freeze_count() == 0
