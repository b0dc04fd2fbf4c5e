"""Shadow partitions: several ``fleet-tui serve`` workers share one registry and broker.

Things fall into ``n`` partitions by a stable hash of the thing name. A worker answers and
stores the shadows of the partitions whose lease (``shadow-part-<i>``) it holds; every
worker hears every request (mosquitto wildcards cannot hash) and drops the others'. Each
worker renews a heartbeat lease (``worker:<id>``) and aims for a fair share,
ceil(n / live workers): it gives away partitions above its share and takes free or expired
ones up to it. A partition counts as owned only while its lease has at least a third of its
TTL left, and only after its documents were loaded from the registry (so versions carry
on); the registry fences every shadow write on the partition leases (see
``Registry.save_shadows``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable

from fleet_tui.registry.registry import Registry

log = logging.getLogger(__name__)
WORKER_PREFIX = "worker:"


def partition_of(thing: str, partitions: int) -> int:
    """Stable across processes and versions (not Python's salted ``hash``)."""
    return zlib.crc32(thing.encode()) % partitions


async def _nothing(parts: set[int]) -> None:
    return None


def lease_name(partition: int) -> str:
    return f"shadow-part-{partition}"


class Partitions:
    def __init__(self, registry: Registry, holder: str, partitions: int, ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.holder = holder
        self.n = partitions
        self.ttl_s = ttl_s
        self.clock = clock
        self.owned: dict[int, float] = {}  # partition -> lease expiry
        # Awaited with the partitions just taken, before they count as owned; called with
        # the partitions just lost or given away.
        self.on_gain: Callable[[set[int]], Awaitable[None]] = _nothing
        self.on_loss: Callable[[set[int]], None] = lambda parts: None
        self.moves = 0

    def owns(self, thing: str) -> bool:
        expiry = self.owned.get(partition_of(thing, self.n))
        return expiry is not None and self.clock() < expiry - self.ttl_s / 3

    def fence(self, things: Iterable[str]) -> tuple[str, list[str]]:
        parts = {partition_of(t, self.n) for t in things}
        return self.holder, [lease_name(p) for p in sorted(parts)]

    async def rebalance(self) -> None:
        """One round: heartbeat, renew, give away above the fair share, take up to it. The
        registry calls run in threads; ownership changes happen on the event loop, between
        requests, so a request never meets a half-loaded or half-dropped partition."""
        now = self.clock()
        leases = self.registry.leases
        await asyncio.to_thread(leases.acquire, WORKER_PREFIX + self.holder, self.holder,
                                self.ttl_s, now)
        workers = max(1, len(await asyncio.to_thread(leases.live, WORKER_PREFIX, now)))
        share = math.ceil(self.n / workers)
        mine = sorted(self.owned)
        surplus = mine[share:] if len(mine) > share else []
        if surplus:
            self._lose(set(surplus), "gave away")
            await asyncio.to_thread(leases.release_many, [lease_name(p) for p in surplus],
                                    self.holder)
        keep = [p for p in mine if p not in surplus]
        held = await asyncio.to_thread(leases.acquire_many, [lease_name(p) for p in keep],
                                       self.holder, self.ttl_s, now)
        lost = {p for p in keep if lease_name(p) not in held}
        if lost:
            self._lose(lost, "lost")
        for p in keep:
            if p not in lost:
                self.owned[p] = now + self.ttl_s
        want = share - len(self.owned)
        if want <= 0:
            return
        # Start the search at a holder-specific offset so workers rarely race for the same.
        start = zlib.crc32(self.holder.encode()) % self.n
        taken = {s.name for s in await asyncio.to_thread(leases.live, "shadow-part-", now)}
        candidates = [p for p in ((start + i) % self.n for i in range(self.n))
                      if p not in self.owned and lease_name(p) not in taken][:want]
        got = await asyncio.to_thread(leases.acquire_many,
                                      [lease_name(p) for p in candidates], self.holder,
                                      self.ttl_s, now)
        gained = {p for p in candidates if lease_name(p) in got}
        if gained:
            await self.on_gain(gained)  # load their documents before answering for them
            for p in gained:
                self.owned[p] = now + self.ttl_s
            self.moves += len(gained)
            log.info("partitions: %s took %d (now %d of %d, %d workers)", self.holder,
                     len(gained), len(self.owned), self.n, workers)

    def _lose(self, parts: set[int], why: str) -> None:
        for p in parts:
            self.owned.pop(p, None)
        self.on_loss(parts)
        log.warning("partitions: %s %s %d partitions", self.holder, why, len(parts))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.rebalance()
            except Exception:  # the database is away: owned partitions age out by expiry
                log.exception("partition rebalance failed; will retry")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl_s / 6)

    async def release(self) -> None:
        """After the last shadow flush: hand everything back at once (no TTL wait)."""
        owned = sorted(self.owned)
        self._lose(set(owned), "released")
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.registry.leases.release_many,
                                    [lease_name(p) for p in owned], self.holder)
            await asyncio.to_thread(self.registry.leases.release,
                                    WORKER_PREFIX + self.holder, self.holder)
