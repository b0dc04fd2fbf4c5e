"""The job store's release on a real registry: the one-statement path (UPDATE ... RETURNING)
and the path for an SQLite older than 3.35 release the same executions, in queue order,
once each."""

from __future__ import annotations

import pytest

from fleet_tui.domain.jobs import IN_PROGRESS, JOB_IN_PROGRESS, QUEUED, SKIPPED, JobSettings
from fleet_tui.registry.jobs_store import NewExecution
from fleet_tui.registry.registry import NewDevice, Registry
from fleet_tui.service.job_control import Actor, Target, create_job, plan_job


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
                batches.append(store.release(conn, plan.job_id, n, 100.0, start=True))
        finally:
            conn.dialect.update_returning = True
    ids = [[e.device_id for e in batch] for batch in batches]
    assert ids == [["d07", "d03", "d09", "d00"], ["d05", "d01", "d08", "d02"],
                   ["d06", "d04"]]  # the target's order (seq), then nothing left
    assert all(e.status == IN_PROGRESS and e.notified_at == 100.0 and e.version_number == 2
               for batch in batches for e in batch)
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
