"""Garbage-collector pacing for a long-running process holding many shadow documents: the
console (whose embedded service churns through documents on another thread) and `serve`.

A full (generation 2) collection walks every tracked object while holding the GIL: with a
100k-device fleet under 5,000 shadow updates/s those pauses reached 150-280 ms and were
the key-press latency's p99 (bench/console.py). Freezing the heap every second moves the
survivors to the permanent generation, so a full collection walks at most a second's worth
(under 70 ms measured). Acyclic garbage is freed by reference counting either way; cycles
frozen meanwhile are reclaimed by an unfreeze and a full collection every ``sweep_s``.
"""

from __future__ import annotations

import asyncio
import gc
import time


class GcPacing:
    def __init__(self, freeze_s: float = 1.0, sweep_s: float = 600.0) -> None:
        self.freeze_s = freeze_s
        self.sweep_s = sweep_s
        self._swept = time.monotonic()
        self.active = False

    def start(self) -> None:
        gc.collect()
        gc.freeze()  # everything the start-up built: never walked again
        self._swept = time.monotonic()
        self.active = True

    def step(self) -> None:
        """Call every ``freeze_s``."""
        if not self.active:
            return
        if time.monotonic() - self._swept >= self.sweep_s:
            gc.unfreeze()
            gc.collect()
            self._swept = time.monotonic()
        gc.freeze()

    def stop(self) -> None:
        if self.active:
            gc.unfreeze()  # let what the console held be collected as usual
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
