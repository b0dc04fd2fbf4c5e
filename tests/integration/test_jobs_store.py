"""The job store's release on a real registry: the one-statement path (UPDATE ... RETURNING)
and the path for an SQLite older than 3.35 release the same executions, in queue order,
once each."""

from __future__ import annotations

import pytest

from fleet_tui.domain.jobs import IN_PROGRESS, QUEUED, JobSettings
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
