"""Waiting for a Textual app's workers in tests."""

from __future__ import annotations

import asyncio

from textual.app import App
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
