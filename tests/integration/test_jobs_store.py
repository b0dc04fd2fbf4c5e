"""The job store's release on a real registry: SQLite's batches of one step each
(registry/sqlite_batch.py), PostgreSQL's UPDATE ... RETURNING and its select-then-update
path release the same executions, in queue order, once each."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from fleet_tui.domain.jobs import (
    IN_PROGRESS,
    JOB_IN_PROGRESS,
    QUEUED,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    JobSettings,
)
from fleet_tui.registry.jobs_store import NewExecution
from fleet_tui.registry.registry import NewDevice, Registry, ReleaseInfo
from fleet_tui.service.job_control import Actor, Target, create_job, plan_job

NOW = 1_765_152_000.1234567


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "select-update"])
def test_release_takes_the_next_n_in_queue_order_once(registry: Registry,
                                                      returning: bool) -> None:
    registry.add_devices(NewDevice(f"d{i:02d}", "rev-a", "2.2.0") for i in range(10))
    plan = plan_job(registry, "reboot", {}, Target(device_ids=tuple(
        f"d{i:02d}" for i in (7, 3, 9, 0, 5, 1, 8, 2, 6, 4))), JobSettings())
    create_job(registry, plan, Actor("alice", "operator"))
    store = registry.jobs
    batches = []
    with registry.locked() as conn:
        if not returning:  # as an SQLite < 3.35 dialect reports itself
            conn.dialect.update_returning = False
        try:
            for n in (4, 4, 4):
                batches.append(store.release(conn, plan.job_id, n, NOW, start=True))
        finally:
            conn.dialect.update_returning = True
    ids = [[e.device_id for e in batch] for batch in batches]
    assert ids == [["d07", "d03", "d09", "d00"], ["d05", "d01", "d08", "d02"],
                   ["d06", "d04"]]  # the target's order (seq), then nothing left
    # Timestamps come back exact: SQLite writes reals into JSON with 15 digits only.
    assert all(e.status == IN_PROGRESS and e.notified_at == NOW and e.started_at == NOW
               and e.version_number == 2 for batch in batches for e in batch)
    with registry.locked() as conn:
        assert store.release(conn, plan.job_id, 4, 101.0, start=True) == []
    statuses = {e.device_id: e.status for e in store.executions(plan.job_id)}
    assert set(statuses.values()) == {IN_PROGRESS} and QUEUED not in statuses.values()


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "select-update"])
def test_start_next_returns_each_devices_params_in_queue_order(registry: Registry,
                                                               returning: bool) -> None:
    """A job inserted in bulk keeps each execution's own parameters (a rollback's target
    per device) and its skips; start_next hands back (device, params) in queue order."""
    registry.add_devices(NewDevice(f"d{i:02d}", "rev-a", "2.2.0") for i in range(6))
    executions = [NewExecution("d04", QUEUED, params={"release": "2.3.0"}),
                  NewExecution("d01", QUEUED),
                  NewExecution("d05", SKIPPED, skip_reason="hardware rev-z unsupported"),
                  NewExecution("d00", QUEUED, params={"release": "2.2.9", "note": "ü"}),
                  NewExecution("d03", QUEUED)]
    job = {"id": "job-params", "job_type": "firmware_update",
           "document": {"release": "2.4.1"}, "target": {"device_ids": []}, "settings": {},
           "status": JOB_IN_PROGRESS, "reason": "", "rollout_id": None, "created_by": "t",
           "created_at": 50.0, "updated_at": 50.0}
    store = registry.jobs
    with registry.locked() as conn:
        store.insert(conn, job, executions)
    stored = {e.device_id: e for e in store.executions("job-params")}
    assert stored["d04"].params == {"release": "2.3.0"} and stored["d01"].params is None
    assert stored["d00"].params == {"release": "2.2.9", "note": "ü"}
    assert stored["d05"].status == SKIPPED and stored["d05"].finished_at == 50.0
    assert stored["d05"].skip_reason == "hardware rev-z unsupported"
    assert [stored[d].seq for d in ("d04", "d01", "d05", "d00", "d03")] == [0, 1, 2, 3, 4]
    with registry.locked() as conn:
        if not returning:
            conn.dialect.update_returning = False
        try:
            first = store.start_next(conn, "job-params", 2, 60.0)
            rest = store.start_next(conn, "job-params", 10, 61.0)
        finally:
            conn.dialect.update_returning = True
    assert first == [("d04", {"release": "2.3.0"}), ("d01", None)]
    assert rest == [("d00", {"release": "2.2.9", "note": "ü"}), ("d03", None)]
    started = {e.device_id: e for e in store.executions("job-params", status=[IN_PROGRESS])}
    assert set(started) == {"d04", "d01", "d00", "d03"}
    assert started["d00"].started_at == 61.0 and started["d00"].version_number == 2


def test_sqlite_batches_probe_each_device_not_the_whole_job(tmp_path: Any) -> None:
    """Every batched statement on a job's executions finds each device of the batch through
    the device index. Without statistics SQLite's planner preferred the (job_id, status)
    index and scanned the whole batch once per execution of the job: finishing 5,000 of a
    20,000-device job held the registry for over 30 s (a fan-out's shadow commits timed
    out behind it)."""
    registry = Registry.open(f"sqlite:///{tmp_path / 'plans.db'}")
    registry.add_devices(NewDevice(f"d{i:03d}", "rev-a", "2.2.0") for i in range(300))
    registry.add_release(ReleaseInfo("2.4.1", "http://fw.invalid/2.4.1.bin", "ab" * 32, 1,
                                     ["rev-a"], [], ""))
    plan = plan_job(registry, "firmware_update", {"release": "2.4.1"},
                    Target(device_ids=tuple(f"d{i:03d}" for i in range(300))), JobSettings())
    create_job(registry, plan, Actor("alice", "operator"))
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
             executemany: bool) -> None:
        if "job_execution" in statement and statement.lstrip().startswith(("UPDATE", "SELECT")):
            statements.append((statement, params))

    store = registry.jobs
    sa.event.listen(registry.engine, "before_cursor_execute", seen)
    with registry.locked() as conn:
        started = store.start_next(conn, plan.job_id, 100, 10.0)
        store.set_details(conn, plan.job_id, {d: {"phase": "downloading"} for d, _ in started},
                          11.0)
        store.finish_many(conn, plan.job_id, [(d, SUCCEEDED, {"ok": 1}) for d, _ in started[:50]],
                          IN_PROGRESS, 12.0)
        moved = store.transition(conn, plan.job_id, [d for d, _ in started[50:]],
                                 [IN_PROGRESS], TIMED_OUT, 13.0)
        released = store.release(conn, plan.job_id, 20, 14.0, start=False)
    sa.event.remove(registry.engine, "before_cursor_execute", seen)
    assert len(started) == 100 and len(moved) == 50 and len(released) == 20
    counts = store.counts([plan.job_id])[plan.job_id]
    assert counts == {SUCCEEDED: 50, TIMED_OUT: 50, QUEUED: 200}
    with registry.engine.connect() as conn:
        first = store.execution(conn, plan.job_id, started[0][0])
        late = store.execution(conn, plan.job_id, started[60][0])
    assert first is not None and first.status_details == {"ok": 1}
    assert late is not None and late.status_details == {"phase": "downloading"}
    keyed = [(s, p) for s, p in statements if "json_each" in s]
    assert len(keyed) >= 5  # each batch went in as one JSON parameter
    with registry.engine.connect() as conn:
        for statement, params in keyed:
            plan_rows = [r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                             params)]
            execution = [r for r in plan_rows if "job_execution" in r]
            assert execution and all("ix_job_execution_device_id" in r or
                                     "AUTOINDEX" in r.upper() for r in execution), \
                (statement, plan_rows)
    registry.close()
