"""The audit log: append-only and tamper-evident. Each entry carries the SHA-256 of the
previous one, over a canonical JSON of its own fields, so editing, deleting or reordering
any entry but the newest breaks the chain and :meth:`AuditLog.verify` says where.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fleet_tui.registry.engine import write_transaction
from fleet_tui.registry.models import AuditEntry, Lease

AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]
LEASE = Lease.__table__  # type: ignore[attr-defined]
GENESIS = "0" * 64
# pg_advisory_xact_lock key of the engine's writes (jobs, rollouts, audit): "flt" + 1.
ENGINE_LOCK_KEY = 0x666C7401


@contextmanager
def locked_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the registry's write lock from its first statement, so a
    read-validate-write (a rollout approval, the audit chain's tail) cannot interleave with
    another writer's. SQLite: BEGIN IMMEDIATE (the database's write lock); PostgreSQL: a
    transaction-scoped advisory lock."""
    with write_transaction(engine) as conn:
        if engine.dialect.name != "sqlite":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ENGINE_LOCK_KEY)))
        yield conn


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    ts: float
    actor: str
    role: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    entries: int
    ok: bool
    broken_at: int | None  # the first entry whose hash or link does not match
    problem: str

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.entries} entries"
        return f"audit chain BROKEN at entry {self.broken_at}: {self.problem}"


def entry_hash(entry_id: int, ts: float, actor: str, role: str, action: str, target: str,
               details: Mapping[str, Any], prev_hash: str) -> str:
    body = json.dumps(
        {"id": entry_id, "ts": repr(float(ts)), "actor": actor, "role": role,
         "action": action, "target": target, "details": details, "prev": prev_hash},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, conn: Connection, actor: str, role: str, action: str, target: str,
               details: Mapping[str, Any] | None = None, ts: float | None = None
               ) -> AuditRecord:
        """Append one entry inside ``conn``, which must come from :func:`locked_transaction`
        (two writers must not read the same tail)."""
        clean: dict[str, Any] = json.loads(json.dumps(dict(details or {}), default=str))
        ts = time.time() if ts is None else ts
        tail = conn.execute(
            sa.select(AUDIT.c.id, AUDIT.c.hash).order_by(AUDIT.c.id.desc()).limit(1)
        ).first()
        entry_id = (tail.id + 1) if tail else 1
        prev = tail.hash if tail else GENESIS
        actor, role, action, target = actor[:128], role[:32], action[:64], target[:256]
        digest = entry_hash(entry_id, ts, actor, role, action, target, clean, prev)
        conn.execute(AUDIT.insert().values(
            id=entry_id, ts=ts, actor=actor, role=role, action=action, target=target,
            details=clean, prev_hash=prev, hash=digest))
        return AuditRecord(entry_id, ts, actor, role, action, target, clean, prev, digest)

    def record(self, actor: str, role: str, action: str, target: str,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Append one entry in a transaction of its own."""
        with locked_transaction(self.engine) as conn:
            return self.append(conn, actor, role, action, target, details)

    def entries(self, *, action: str | None = None, actor: str | None = None,
                target: str | None = None, after_id: int = 0, limit: int = 500,
                newest_first: bool = False) -> list[AuditRecord]:
        stmt = sa.select(AUDIT).where(AUDIT.c.id > after_id)
        if action:
            stmt = stmt.where(AUDIT.c.action.like(action.replace("*", "%")))
        if actor:
            stmt = stmt.where(AUDIT.c.actor == actor)
        if target:
            stmt = stmt.where(AUDIT.c.target == target)
        order = AUDIT.c.id.desc() if newest_first else AUDIT.c.id
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(order).limit(limit)).all()
        return [AuditRecord(r.id, r.ts, r.actor, r.role, r.action, r.target, dict(r.details),
                            r.prev_hash, r.hash) for r in rows]

    def verify(self) -> ChainReport:
        """Walk the whole chain in id order, recomputing every hash."""
        prev, expected_id, n = GENESIS, 1, 0
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(AUDIT).order_by(AUDIT.c.id)).yield_per(5000):
                n += 1
                if r.id != expected_id:
                    return ChainReport(n, False, r.id, f"expected entry {expected_id} next "
                                       f"(an entry was removed)")
                if r.prev_hash != prev:
                    return ChainReport(n, False, r.id, "its link to the previous entry does "
                                       "not match (an entry before it changed or was removed)")
                digest = entry_hash(r.id, r.ts, r.actor, r.role, r.action, r.target,
                                    dict(r.details), r.prev_hash)
                if digest != r.hash:
                    return ChainReport(n, False, r.id, "its contents do not match its hash "
                                       "(the entry was edited)")
                prev, expected_id = r.hash, r.id + 1
        return ChainReport(n, True, None, "")
