"""Named leases in the registry: one holder at a time until the lease expires. The job and
rollout engine runs only on the holder of ``engine``; a second ``fleet-tui serve`` takes
over when the first stops renewing (it died or lost the database)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fleet_tui.registry.audit import LEASE, locked_transaction


@dataclass(frozen=True, slots=True)
class LeaseState:
    name: str
    holder: str
    expires_at: float


class Leases:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def acquire(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        """Take or renew ``name`` for ``holder``; False while someone else holds it."""
        with locked_transaction(self.engine) as conn:
            row = conn.execute(sa.select(LEASE).where(LEASE.c.name == name)).first()
            if row is None:
                conn.execute(LEASE.insert().values(name=name, holder=holder,
                                                   expires_at=now + ttl_s))
                return True
            if row.holder != holder and row.expires_at > now:
                return False
            conn.execute(LEASE.update().where(LEASE.c.name == name)
                         .values(holder=holder, expires_at=now + ttl_s))
            return True

    def release(self, name: str, holder: str) -> None:
        with locked_transaction(self.engine) as conn:
            conn.execute(LEASE.delete().where(LEASE.c.name == name, LEASE.c.holder == holder))

    def get(self, name: str) -> LeaseState | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(LEASE).where(LEASE.c.name == name)).first()
        return LeaseState(row.name, row.holder, row.expires_at) if row else None

    def acquire_many(self, names: Sequence[str], holder: str, ttl_s: float, now: float
                     ) -> set[str]:
        """Take or renew each of ``names`` for ``holder`` in one transaction; returns the
        names ``holder`` now holds (the others are someone else's, unexpired)."""
        if not names:
            return set()
        held: set[str] = set()
        with locked_transaction(self.engine) as conn:
            # Row locks in name order, as check_fence takes them: no lock-order deadlock.
            query = sa.select(LEASE).where(LEASE.c.name.in_(list(names))).order_by(LEASE.c.name)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            rows = {r.name: r for r in conn.execute(query)}
            for name in names:
                row = rows.get(name)
                if row is None:
                    conn.execute(LEASE.insert().values(name=name, holder=holder,
                                                       expires_at=now + ttl_s))
                elif row.holder == holder or row.expires_at <= now:
                    conn.execute(LEASE.update().where(LEASE.c.name == name)
                                 .values(holder=holder, expires_at=now + ttl_s))
                else:
                    continue
                held.add(name)
        return held

    def release_many(self, names: Sequence[str], holder: str) -> None:
        if names:
            with locked_transaction(self.engine) as conn:
                conn.execute(LEASE.delete().where(LEASE.c.name.in_(list(names)),
                                                  LEASE.c.holder == holder))

    def live(self, prefix: str, now: float) -> list[LeaseState]:
        """The unexpired leases whose name starts with ``prefix`` (e.g. worker heartbeats)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(LEASE).where(LEASE.c.name.startswith(prefix),
                                                       LEASE.c.expires_at > now))
            return [LeaseState(r.name, r.holder, r.expires_at) for r in rows]


class StaleOwner(Exception):
    """A write fenced off: the writer no longer holds the partition lease it writes under."""


def check_fence(conn: Connection, holder: str, names: Sequence[str], now: float) -> None:
    """Inside a write transaction: raise :class:`StaleOwner` unless ``holder`` holds every
    lease in ``names``. On PostgreSQL the rows stay share-locked until commit, so a
    takeover (which updates the row) waits for this write to land, then loads it."""
    if not names:
        return
    query = sa.select(LEASE.c.name).where(LEASE.c.name.in_(list(names)),
                                          LEASE.c.holder == holder, LEASE.c.expires_at > now
                                          ).order_by(LEASE.c.name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    held = {r.name for r in conn.execute(query)}
    missing = sorted(set(names) - held)
    if missing:
        raise StaleOwner(f"{holder} no longer holds {', '.join(missing[:5])}")
