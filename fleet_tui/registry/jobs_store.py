"""Jobs and their executions in the registry. Every execution state change is a
conditional UPDATE (``WHERE status IN (...)``), so a stale view (an engine that lost its
lease, a cancel from the CLI racing a device's update) can never move an execution
backwards or finish it twice. Engine writes run inside :func:`locked_transaction`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fleet_tui.domain.jobs import (
    ACTIVE_STATES,
    IN_PROGRESS,
    JOB_ACTIVE,
    QUEUED,
    TERMINAL_STATES,
)
from fleet_tui.registry.bulk_load import bulk_insert
from fleet_tui.registry.errors import NotFound
from fleet_tui.registry.models import Job, JobExecution
from fleet_tui.registry.sqlite_batch import dumps as batch_json
from fleet_tui.registry.sqlite_batch import fetch_rows, json_rows, json_values, unindexed

JOB = Job.__table__  # type: ignore[attr-defined]
EXECUTION = JobExecution.__table__  # type: ignore[attr-defined]
CHUNK = 5000  # rows per executemany / IN list
_JSON_COLUMNS = ("status_details", "params")
_INSERT_COLUMNS = ("job_id", "device_id", "status", "seq", "attempt", "version_number",
                   "skip_reason", "params", "queued_at", "updated_at", "finished_at")


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    job_type: str
    document: dict[str, Any]
    target: dict[str, Any]
    settings: dict[str, Any]
    status: str
    reason: str
    rollout_id: str | None
    created_by: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    job_id: str
    device_id: str
    status: str
    seq: int
    attempt: int
    version_number: int
    status_details: dict[str, Any] | None
    params: dict[str, Any] | None
    skip_reason: str | None
    queued_at: float
    notified_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float


def _job(r: Any) -> JobRow:
    return JobRow(r.id, r.job_type, dict(r.document), dict(r.target), dict(r.settings),
                  r.status, r.reason, r.rollout_id, r.created_by, r.created_at, r.updated_at)


def _execution(r: Any) -> ExecutionRow:
    return ExecutionRow(r.job_id, r.device_id, r.status, r.seq, r.attempt, r.version_number,
                        r.status_details, r.params, r.skip_reason, r.queued_at, r.notified_at,
                        r.started_at, r.finished_at, r.updated_at)


def _execution_of(values: Sequence[Any]) -> ExecutionRow:
    """An execution from a :func:`fetch_rows` row of every column, in table order."""
    return ExecutionRow(**dict(zip(_ROW_FIELDS, values, strict=True)))


def _release_parts(job_id: str, now: float, start: bool
                   ) -> tuple[tuple[Any, ...], sa.Select[Any], dict[str, Any]]:
    """A release's filter (QUEUED, not yet told), its picking order (``seq``) and the
    values it marks (told now; with ``start``, IN_PROGRESS as well)."""
    waiting = (EXECUTION.c.job_id == job_id, EXECUTION.c.status == QUEUED,
               EXECUTION.c.notified_at.is_(None))
    pending = sa.select(EXECUTION.c.device_id).where(*waiting).order_by(EXECUTION.c.seq)
    values: dict[str, Any] = {"notified_at": now, "updated_at": now}
    if start:
        values.update(status=IN_PROGRESS, started_at=now,
                      version_number=EXECUTION.c.version_number + 1)
    return waiting, pending, values


def _by_device(job_id: str, states: Sequence[str]) -> tuple[Any, ...]:
    """A job's executions in ``states``, for SQLite statements keyed by a batch of devices:
    probed through the device index, one per device (see sqlite_batch.unindexed)."""
    return (unindexed(EXECUTION.c.job_id) == job_id,
            unindexed(EXECUTION.c.status).in_(list(states)))


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True, slots=True)
class NewExecution:
    device_id: str
    status: str  # QUEUED or SKIPPED
    skip_reason: str | None = None
    params: Mapping[str, Any] | None = None


_ROW_FIELDS = tuple(EXECUTION.c.keys())
assert set(_ROW_FIELDS) == set(ExecutionRow.__slots__)


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----------------------------------------------------------------- creation

    def insert(self, conn: Connection, job: Mapping[str, Any],
               executions: Sequence[NewExecution]) -> None:
        if conn.execute(sa.select(JOB.c.id).where(JOB.c.id == job["id"])).first():
            from fleet_tui.registry.errors import Conflict

            raise Conflict(f"job {job['id']!r} already exists")
        conn.execute(JOB.insert().values(**job))
        now = job["created_at"]
        # bulk_insert: SQLAlchemy's per-row parameters (and a json.dumps of each params
        # null) were half of creating a 100k-device job, 1.5 s, before any device heard.
        job_id = job["id"]
        bulk_insert(conn, EXECUTION, _INSERT_COLUMNS, [
            (job_id, e.device_id, e.status, i, 0, 1, e.skip_reason,
             orjson.dumps(dict(e.params)).decode() if e.params else None, now, now,
             now if e.status in TERMINAL_STATES else None)
            for i, e in enumerate(executions)])

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str, conn: Connection | None = None) -> JobRow:
        if conn is None:
            with self.engine.connect() as own:
                return self.get(job_id, own)
        row = conn.execute(sa.select(JOB).where(JOB.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return _job(row)

    def list_jobs(self, *, status: Sequence[str] | None = None, rollout_id: str | None = None,
             limit: int = 100) -> list[JobRow]:
        stmt = sa.select(JOB).order_by(JOB.c.created_at.desc()).limit(limit)
        if status:
            stmt = stmt.where(JOB.c.status.in_(list(status)))
        if rollout_id is not None:
            stmt = stmt.where(JOB.c.rollout_id == rollout_id)
        with self.engine.connect() as conn:
            return [_job(r) for r in conn.execute(stmt)]

    def active(self, conn: Connection) -> list[JobRow]:
        stmt = sa.select(JOB).where(JOB.c.status.in_(list(JOB_ACTIVE))).order_by(
            JOB.c.created_at)
        return [_job(r) for r in conn.execute(stmt)]

    def counts(self, job_ids: Sequence[str], conn: Connection | None = None
               ) -> dict[str, dict[str, int]]:
        """job -> {status: executions}."""
        if conn is None:
            with self.engine.connect() as own:
                return self.counts(job_ids, own)
        out: dict[str, dict[str, int]] = {j: {} for j in job_ids}
        if not job_ids:
            return out
        stmt = (sa.select(EXECUTION.c.job_id, EXECUTION.c.status, sa.func.count())
                .where(EXECUTION.c.job_id.in_(list(job_ids)))
                .group_by(EXECUTION.c.job_id, EXECUTION.c.status))
        for job_id, status, n in conn.execute(stmt):
            out[job_id][status] = int(n)
        return out

    def executions(self, job_id: str, *, status: Sequence[str] | None = None,
                   offset: int = 0, limit: int | None = None,
                   conn: Connection | None = None) -> list[ExecutionRow]:
        if conn is None:
            with self.engine.connect() as own:
                return self.executions(job_id, status=status, offset=offset, limit=limit,
                                       conn=own)
        stmt = sa.select(EXECUTION).where(EXECUTION.c.job_id == job_id).order_by(
            EXECUTION.c.seq).offset(offset)
        if status:
            stmt = stmt.where(EXECUTION.c.status.in_(list(status)))
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_execution(r) for r in conn.execute(stmt)]

    def execution(self, conn: Connection, job_id: str, device_id: str) -> ExecutionRow | None:
        row = conn.execute(sa.select(EXECUTION).where(
            EXECUTION.c.job_id == job_id, EXECUTION.c.device_id == device_id)).first()
        return _execution(row) if row else None

    def device_executions(self, device_id: str, limit: int = 50) -> list[ExecutionRow]:
        stmt = (sa.select(EXECUTION).where(EXECUTION.c.device_id == device_id)
                .order_by(EXECUTION.c.queued_at.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [_execution(r) for r in conn.execute(stmt)]

    def busy_devices(self, conn: Connection, device_ids: Sequence[str], job_type: str
                     ) -> dict[str, str]:
        """device -> the active job of ``job_type`` it is already part of."""
        out: dict[str, str] = {}
        for chunk in _chunks(list(device_ids)):
            stmt = (sa.select(EXECUTION.c.device_id, EXECUTION.c.job_id)
                    .join(JOB, JOB.c.id == EXECUTION.c.job_id)
                    .where(EXECUTION.c.device_id.in_(list(chunk)),
                           EXECUTION.c.status.in_(list(ACTIVE_STATES)),
                           JOB.c.job_type == job_type, JOB.c.status.in_(list(JOB_ACTIVE))))
            out.update({d: j for d, j in conn.execute(stmt)})
        return out

    def pending_for_devices(self, conn: Connection, device_ids: Sequence[str]
                            ) -> dict[str, list[ExecutionRow]]:
        """Per device, its notified executions still QUEUED or IN_PROGRESS (oldest first):
        what the AWS Jobs API shows the device."""
        out: dict[str, list[ExecutionRow]] = {d: [] for d in device_ids}
        for chunk in _chunks(list(device_ids)):
            stmt = (sa.select(EXECUTION)
                    .where(EXECUTION.c.device_id.in_(list(chunk)),
                           EXECUTION.c.status.in_(list(ACTIVE_STATES)),
                           EXECUTION.c.notified_at.is_not(None))
                    .order_by(EXECUTION.c.notified_at, EXECUTION.c.job_id))
            for r in conn.execute(stmt):
                out[r.device_id].append(_execution(r))
        return out

    # ------------------------------------------------------------ engine writes

    def release(self, conn: Connection, job_id: str, n: int, now: float, *, start: bool,
                allow: Callable[[str], bool] | None = None) -> list[ExecutionRow]:
        """Mark the next ``n`` unnotified QUEUED executions (in ``seq`` order) notified;
        with ``start`` they go IN_PROGRESS at once (the shadow carries the job). ``allow``
        (maintenance windows) skips devices that may not start now: they stay queued."""
        if n <= 0:
            return []
        waiting, pending, values = _release_parts(job_id, now, start)
        if conn.dialect.name == "sqlite":
            ids = [r[0] for r in self._mark_sqlite(conn, job_id, waiting, n, values, allow)]
            rows = fetch_rows(conn, sa.select(EXECUTION).where(
                unindexed(EXECUTION.c.job_id) == job_id,
                EXECUTION.c.device_id.in_(json_values("ids"))),
                _JSON_COLUMNS, {"ids": batch_json(ids)}) if ids else []
            return sorted((_execution_of(r) for r in rows), key=lambda e: e.seq)
        if allow is None and conn.dialect.update_returning:
            # One statement picks, marks and returns them (SQLite >= 3.35, PostgreSQL): no
            # id lists bound back and forth, a third of a 100k fan-out's release time.
            marked = conn.execute(EXECUTION.update().where(
                *waiting, EXECUTION.c.device_id.in_(pending.limit(n))).values(**values)
                .returning(*EXECUTION.c))
            return sorted((_execution(r) for r in marked), key=lambda e: e.seq)
        if allow is None:  # an SQLite older than 3.35: no UPDATE ... RETURNING
            rows = list(conn.execute(pending.limit(n)).scalars())
        else:
            rows = [d for d in conn.execute(pending).scalars() if allow(d)][:n]
        if not rows:
            return []
        for chunk in _chunks(list(rows)):
            conn.execute(EXECUTION.update().where(
                *waiting, EXECUTION.c.device_id.in_(list(chunk))).values(**values))
        out: list[ExecutionRow] = []
        for chunk in _chunks(list(rows)):
            out += [_execution(r) for r in conn.execute(sa.select(EXECUTION).where(
                EXECUTION.c.job_id == job_id, EXECUTION.c.device_id.in_(list(chunk))))]
        out.sort(key=lambda e: e.seq)
        return out

    def start_next(self, conn: Connection, job_id: str, n: int, now: float,
                   allow: Callable[[str], bool] | None = None
                   ) -> list[tuple[str, dict[str, Any] | None]]:
        """:meth:`release` with ``start`` for a job the shadow carries, returning only what
        its engine needs, (device, per-device params) in ``seq`` order: a 100k fan-out
        spent 70% of its release time building full rows (and decoding a JSON ``null``
        per row) that it read two fields of."""
        if n <= 0:
            return []
        if conn.dialect.name == "sqlite":
            waiting, _, values = _release_parts(job_id, now, start=True)
            return [(r[0], r[2]) for r in self._mark_sqlite(conn, job_id, waiting, n, values, allow,
                                                            EXECUTION.c.params)]
        if allow is not None or not conn.dialect.update_returning:
            return [(e.device_id, e.params)
                    for e in self.release(conn, job_id, n, now, start=True, allow=allow)]
        waiting, pending, values = _release_parts(job_id, now, start=True)
        marked = conn.execute(EXECUTION.update().where(
            *waiting, EXECUTION.c.device_id.in_(pending.limit(n))).values(**values)
            .returning(EXECUTION.c.device_id, EXECUTION.c.seq,
                       sa.cast(EXECUTION.c.params, sa.Text)))
        rows = sorted(marked, key=lambda r: r[1])
        return [(r[0], None if r[2] is None or r[2] == "null" else orjson.loads(r[2]))
                for r in rows]

    @staticmethod
    def _mark_sqlite(conn: Connection, job_id: str, waiting: tuple[Any, ...], n: int,
                     values: dict[str, Any], allow: Callable[[str], bool] | None,
                     *extra: Any) -> list[list[Any]]:
        """SQLite's release: the next ``n`` waiting executions (that ``allow`` lets start)
        as [device, seq, *extra] in ``seq`` order, read in one step before they are
        marked in one statement (see sqlite_batch: no step per row)."""
        pick = sa.select(EXECUTION.c.device_id, EXECUTION.c.seq, *extra).where(*waiting)
        if allow is None:
            pick = pick.order_by(EXECUTION.c.seq).limit(n)
        rows = sorted(fetch_rows(conn, pick, _JSON_COLUMNS), key=lambda r: r[1])
        if allow is not None:
            rows = [r for r in rows if allow(r[0])][:n]
        if rows:
            conn.execute(EXECUTION.update().where(
                *_by_device(job_id, [QUEUED]), EXECUTION.c.notified_at.is_(None),
                EXECUTION.c.device_id.in_(json_values("ids"))).values(**values),
                {"ids": batch_json([r[0] for r in rows])})
        return rows

    def transition(self, conn: Connection, job_id: str, device_ids: Sequence[str],
                   from_states: Iterable[str], to: str, now: float, *,
                   details: Mapping[str, Any] | None = None) -> list[str]:
        """Move executions that are still in ``from_states`` to ``to``; returns the devices
        that moved (the others had moved on already)."""
        froms = list(from_states)
        moved: list[str] = []
        values: dict[str, Any] = {"status": to, "updated_at": now,
                                  "version_number": EXECUTION.c.version_number + 1}
        if to in TERMINAL_STATES:
            values["finished_at"] = now
        if to == IN_PROGRESS:
            values["started_at"] = now
        if details is not None:
            values["status_details"] = dict(details)
        if conn.dialect.name == "sqlite" and device_ids:
            where = (*_by_device(job_id, froms), EXECUTION.c.device_id.in_(json_values("ids")))
            batch = {"ids": batch_json(list(device_ids))}
            moved = [r[0] for r in fetch_rows(
                conn, sa.select(EXECUTION.c.device_id).where(*where), params=batch)]
            if moved:
                conn.execute(EXECUTION.update().where(*where).values(**values), batch)
            return moved
        for chunk in _chunks(list(device_ids)):
            where = (EXECUTION.c.job_id == job_id, EXECUTION.c.device_id.in_(list(chunk)),
                     EXECUTION.c.status.in_(froms))
            ids = conn.execute(sa.select(EXECUTION.c.device_id).where(*where)).scalars().all()
            if ids:
                conn.execute(EXECUTION.update().where(
                    EXECUTION.c.job_id == job_id, EXECUTION.c.device_id.in_(list(ids)),
                    EXECUTION.c.status.in_(froms)).values(**values))
                moved += list(ids)
        return moved

    def update_execution(self, conn: Connection, job_id: str, device_id: str,
                         expected_status: str, values: Mapping[str, Any]) -> bool:
        """One device's update, only if its execution is still ``expected_status``."""
        result = conn.execute(EXECUTION.update().where(
            EXECUTION.c.job_id == job_id, EXECUTION.c.device_id == device_id,
            EXECUTION.c.status == expected_status).values(
                version_number=EXECUTION.c.version_number + 1, **values))
        return bool(result.rowcount)

    def set_details(self, conn: Connection, job_id: str,
                    details: Mapping[str, Mapping[str, Any]], now: float) -> None:
        """Progress notes (e.g. ``ota_status``) of in-progress executions, batched."""
        if details and conn.dialect.name == "sqlite":
            r = json_rows("b_dev", "b_details").subquery()
            conn.execute(EXECUTION.update().where(
                *_by_device(job_id, [IN_PROGRESS]), EXECUTION.c.device_id == r.c.b_dev
            ).values(status_details=r.c.b_details, updated_at=now),
                {"rows": batch_json([(d, dict(v)) for d, v in details.items()])})
        elif details:
            conn.execute(
                EXECUTION.update().where(EXECUTION.c.job_id == job_id,
                                         EXECUTION.c.device_id == sa.bindparam("b_dev"),
                                         EXECUTION.c.status == IN_PROGRESS)
                .values(status_details=sa.bindparam("b_details"), updated_at=now),
                [{"b_dev": d, "b_details": dict(v)} for d, v in details.items()])

    def timed_out(self, conn: Connection, job_id: str, started_before: float
                  ) -> list[ExecutionRow]:
        stmt = sa.select(EXECUTION).where(
            EXECUTION.c.job_id == job_id, EXECUTION.c.status == IN_PROGRESS,
            EXECUTION.c.started_at < started_before)
        return [_execution(r) for r in conn.execute(stmt)]

    def requeue(self, conn: Connection, job_id: str, device_ids: Sequence[str], now: float
                ) -> None:
        """Back to QUEUED for another attempt (a retry): told again when the rate allows."""
        for chunk in _chunks(list(device_ids)):
            conn.execute(EXECUTION.update().where(
                EXECUTION.c.job_id == job_id, EXECUTION.c.device_id.in_(list(chunk)),
                EXECUTION.c.status.in_(["FAILED", "TIMED_OUT"])).values(
                    status=QUEUED, attempt=EXECUTION.c.attempt + 1, notified_at=None,
                    started_at=None, finished_at=None, updated_at=now,
                    version_number=EXECUTION.c.version_number + 1))

    def set_status(self, conn: Connection, job_id: str, status: str, reason: str,
                   now: float, *, only_from: Iterable[str] | None = None) -> bool:
        stmt = JOB.update().where(JOB.c.id == job_id)
        if only_from is not None:
            stmt = stmt.where(JOB.c.status.in_(list(only_from)))
        return bool(conn.execute(stmt.values(status=status, reason=reason,
                                             updated_at=now)).rowcount)

    def device_ids(self, conn: Connection, job_id: str, states: Iterable[str]) -> list[str]:
        return list(conn.execute(sa.select(EXECUTION.c.device_id).where(
            EXECUTION.c.job_id == job_id, EXECUTION.c.status.in_(list(states)))
            .order_by(EXECUTION.c.seq)).scalars())

    def finished_jobs_with(self, conn: Connection, states: Iterable[str]) -> list[str]:
        """Jobs no longer active that still have executions in one of ``states`` (an index
        probe per job, not a scan of every execution)."""
        inner = sa.select(EXECUTION.c.job_id).where(
            EXECUTION.c.job_id == JOB.c.id, EXECUTION.c.status.in_(list(states)))
        return list(conn.execute(sa.select(JOB.c.id).where(
            JOB.c.status.not_in(list(JOB_ACTIVE)), inner.exists())).scalars())

    def retryable(self, conn: Connection, job_id: str, states: Iterable[str],
                  retries: int) -> list[str]:
        """Devices whose execution ended in ``states`` with attempts left."""
        return list(conn.execute(sa.select(EXECUTION.c.device_id).where(
            EXECUTION.c.job_id == job_id, EXECUTION.c.status.in_(list(states)),
            EXECUTION.c.attempt < retries)).scalars())

    def finished_since(self, conn: Connection, since: float, states: Iterable[str]
                       ) -> list[tuple[str, str]]:
        """(job, device) of executions that ended in ``states`` since ``since``."""
        return [(j, d) for j, d in conn.execute(sa.select(
            EXECUTION.c.job_id, EXECUTION.c.device_id).where(
                EXECUTION.c.status.in_(list(states)), EXECUTION.c.finished_at >= since))]

    def finish_many(self, conn: Connection, job_id: str,
                    results: Sequence[tuple[str, str, Mapping[str, Any]]], from_state: str,
                    now: float) -> None:
        """(device, new status, details) for executions still in ``from_state``, in one
        executemany: a wave of 100k devices finishing must not cost 100k round trips."""
        if not results:
            return
        if conn.dialect.name == "sqlite":
            r = json_rows("b_dev", "b_status", "b_details").subquery()
            conn.execute(EXECUTION.update().where(*_by_device(job_id, [from_state]),
                                                  EXECUTION.c.device_id == r.c.b_dev).values(
                    status=r.c.b_status, status_details=r.c.b_details, finished_at=now,
                    updated_at=now, version_number=EXECUTION.c.version_number + 1),
                {"rows": batch_json([(d, st, dict(info)) for d, st, info in results])})
            return
        stmt = (EXECUTION.update()
                .where(EXECUTION.c.job_id == job_id,
                       EXECUTION.c.device_id == sa.bindparam("b_dev"),
                       EXECUTION.c.status == from_state)
                .values(status=sa.bindparam("b_status"),
                        status_details=sa.bindparam("b_details"), finished_at=now,
                        updated_at=now, version_number=EXECUTION.c.version_number + 1))
        for chunk in _chunks(list(results)):
            conn.execute(stmt, [{"b_dev": d, "b_status": st, "b_details": dict(info)}
                                for d, st, info in chunk])

    def stats(self, conn: Connection, job_id: str, since: float) -> JobStats:
        """Counts by state, notified so far, in flight and started since ``since``: one
        scan of the job's executions per engine tick, not four."""
        notified = sa.case((EXECUTION.c.notified_at.is_not(None), 1), else_=0)
        recent = sa.case((EXECUTION.c.notified_at >= since, 1), else_=0)
        rows = conn.execute(
            sa.select(EXECUTION.c.status, sa.func.count(), sa.func.sum(notified),
                      sa.func.sum(recent))
            .where(EXECUTION.c.job_id == job_id).group_by(EXECUTION.c.status)).all()
        counts = {r[0]: int(r[1]) for r in rows}
        told = {r[0]: int(r[2] or 0) for r in rows}
        return JobStats(counts, sum(told.values()),
                        sum(told.get(s, 0) for s in ACTIVE_STATES),
                        sum(int(r[3] or 0) for r in rows))


@dataclass(frozen=True, slots=True)
class JobStats:
    counts: dict[str, int]
    notified: int
    in_flight: int
    started_recently: int
