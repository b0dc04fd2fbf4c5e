"""Named leases in the registry: one holder at a time until the lease expires. The job and
rollout engine runs only on the holder of ``engine``; a second ``fleet-tui serve`` takes
over when the first stops renewing (it died or lost the database)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

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
