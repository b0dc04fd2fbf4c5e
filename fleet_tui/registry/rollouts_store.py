"""Rollouts and their waves in the registry (the rules live in ``domain/rollout.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fleet_tui.domain.rollout import ROLLOUT_ACTIVE
from fleet_tui.registry.errors import Conflict, NotFound
from fleet_tui.registry.models import Rollout, RolloutWave

ROLLOUT = Rollout.__table__  # type: ignore[attr-defined]
WAVE = RolloutWave.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class WaveRow:
    rollout_id: str
    index: int
    name: str
    status: str
    device_ids: list[str]
    job_id: str | None
    evidence: dict[str, Any] | None
    approvals: list[str]
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class RolloutRow:
    id: str
    release_version: str
    previous_version: str | None
    group_name: str
    status: str
    plan: dict[str, Any]
    gates: dict[str, Any]
    current_wave: int
    reason: str
    created_by: str
    created_at: float
    updated_at: float
    waves: tuple[WaveRow, ...]

    @property
    def wave(self) -> WaveRow | None:
        return self.waves[self.current_wave] if self.current_wave < len(self.waves) else None


def _wave(r: Any) -> WaveRow:
    return WaveRow(r.rollout_id, r.index, r.name, r.status, list(r.device_ids), r.job_id,
                   r.evidence, list(r.approvals), r.started_at, r.finished_at)


class RolloutStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, conn: Connection, rollout: Mapping[str, Any],
               waves: Sequence[Mapping[str, Any]]) -> None:
        if conn.execute(sa.select(ROLLOUT.c.id).where(ROLLOUT.c.id == rollout["id"])).first():
            raise Conflict(f"rollout {rollout['id']!r} already exists")
        conn.execute(ROLLOUT.insert().values(**rollout))
        conn.execute(WAVE.insert(), [{"rollout_id": rollout["id"], **w} for w in waves])

    def get(self, rollout_id: str, conn: Connection | None = None) -> RolloutRow:
        if conn is None:
            with self.engine.connect() as own:
                return self.get(rollout_id, own)
        row = conn.execute(sa.select(ROLLOUT).where(ROLLOUT.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout {rollout_id!r}")
        waves = conn.execute(sa.select(WAVE).where(WAVE.c.rollout_id == rollout_id)
                             .order_by(WAVE.c.index)).all()
        return RolloutRow(row.id, row.release_version, row.previous_version, row.group_name,
                          row.status, dict(row.plan), dict(row.gates), row.current_wave,
                          row.reason, row.created_by, row.created_at, row.updated_at,
                          tuple(_wave(w) for w in waves))

    def list_rollouts(self, *, active_only: bool = False, limit: int = 50,
             conn: Connection | None = None) -> list[RolloutRow]:
        if conn is None:
            with self.engine.connect() as own:
                return self.list_rollouts(active_only=active_only, limit=limit, conn=own)
        stmt = sa.select(ROLLOUT.c.id).order_by(ROLLOUT.c.created_at.desc()).limit(limit)
        if active_only:
            stmt = stmt.where(ROLLOUT.c.status.in_(list(ROLLOUT_ACTIVE)))
        return [self.get(i, conn) for i in conn.execute(stmt).scalars().all()]

    def count_active(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                ROLLOUT.c.status.in_(list(ROLLOUT_ACTIVE)))).scalar() or 0)

    def update(self, conn: Connection, rollout_id: str, **values: Any) -> None:
        conn.execute(ROLLOUT.update().where(ROLLOUT.c.id == rollout_id).values(**values))

    def update_wave(self, conn: Connection, rollout_id: str, index: int, **values: Any
                    ) -> None:
        conn.execute(WAVE.update().where(WAVE.c.rollout_id == rollout_id,
                                         WAVE.c.index == index).values(**values))
