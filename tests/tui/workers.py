"""Waiting for a Textual app's workers in tests."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.worker import WorkerCancelled


async def workers_done(app: App[object]) -> None:
    """Wait for every running worker; one cancelled by a newer exclusive worker is expected.

    `WorkerManager.wait_for_complete` raises `WorkerCancelled` in that case, which made a
    live test fail whenever a refresh replaced a load in flight.
    """
    results = await asyncio.gather(*(w.wait() for w in list(app.workers)),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, WorkerCancelled):
            raise result


async def settled(pilot: Pilot[Any], *, rounds: int = 4, limit: int = 20) -> None:
    """Wait for the workers, then until two frames in a row are the same.

    What a finished worker posts (counts, pages) is applied and drawn in later frames; under
    load a snapshot taken right after "workers done" could catch the screen between two.
    """
    for _ in range(rounds):
        await workers_done(pilot.app)
        await pilot.pause()
    frame = pilot.app.export_screenshot()
    for _ in range(limit):
        await pilot.pause(0.02)
        await workers_done(pilot.app)
        again = pilot.app.export_screenshot()
        if again == frame:
            return
        frame = again
    raise AssertionError(f"the screen kept changing for {limit} frames")
