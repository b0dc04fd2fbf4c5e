"""Garbage-collector pacing for a long-running process holding many shadow documents: the
console (whose embedded service churns through documents on another thread) and `serve`.

A full (generation 2) collection walks every tracked object while holding the GIL: with a
100k-device fleet under 5,000 shadow updates/s those pauses reached 150-280 ms and were
the key-press latency's p99 (bench/console.py). Freezing the heap every second moves the
survivors to the permanent generation, so a full collection would walk at most a second's
worth. Acyclic garbage is freed by reference counting either way; cycles
frozen meanwhile are reclaimed by an unfreeze and a full collection every ``sweep_s``.

While pacing, automatic full collections are off (a generation-2 threshold no process
reaches): with the heap frozen each second they only walked that second's survivors, yet at
5,000 updates/s those walks still took 35-75 ms and were the worst key presses left. Young
collections (generations 0 and 1) stay automatic and take 0.1-3 ms.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

NEVER = 2**31 - 1  # generation-2 threshold while pacing: no automatic full collection


class GcPacing:
    """``quiet``: whether a long pause is acceptable now (the console: no input for a few
    seconds). A due sweep waits for it, but at most one more ``sweep_s``."""

    def __init__(self, freeze_s: float = 1.0, sweep_s: float = 600.0,
                 quiet: Callable[[], bool] | None = None) -> None:
        self.freeze_s = freeze_s
        self.sweep_s = sweep_s
        self.quiet = quiet
        self._swept = time.monotonic()
        self.active = False
        self._thresholds: tuple[int, int, int] | None = None

    def start(self) -> None:
        gc.collect()
        gc.freeze()  # everything the start-up built: never walked again
        self._thresholds = gc.get_threshold()
        young, middle, _ = self._thresholds
        gc.set_threshold(young, middle, NEVER)
        self._swept = time.monotonic()
        self.active = True

    def step(self) -> None:
        """Call every ``freeze_s``."""
        if not self.active:
            return
        since = time.monotonic() - self._swept
        if since >= 2 * self.sweep_s or (
                since >= self.sweep_s and (self.quiet is None or self.quiet())):
            gc.unfreeze()
            gc.collect()
            self._swept = time.monotonic()
        gc.freeze()

    def stop(self) -> None:
        if self.active:
            gc.unfreeze()  # let what the console held be collected as usual
            assert self._thresholds is not None  # set by start()
            gc.set_threshold(*self._thresholds)
            self.active = False


async def pace_gc(stop: asyncio.Event, pacing: GcPacing | None = None) -> None:
    """Run ``pacing`` on this event loop until ``stop`` (for `serve`)."""
    pacing = pacing or GcPacing()
    pacing.start()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), pacing.freeze_s)
            except TimeoutError:
                pacing.step()
    finally:
        pacing.stop()
