"""The audit chain, engine leases and the registry's write lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading

import sqlalchemy as sa

from fleet_tui.registry.audit import AUDIT
from fleet_tui.registry.automation_store import ALERT
from fleet_tui.registry.registry import Registry


def test_audit_chain_verifies_and_names_the_tampered_entry(registry: Registry) -> None:
    for i in range(5):
        registry.audit.record("alice", "approver", "rollout.approve", f"r{i}", {"wave": i})
    report = registry.audit.verify()
    assert report.ok and report.entries == 5
    with registry.engine.begin() as conn:  # someone edits history
        conn.execute(AUDIT.update().where(AUDIT.c.id == 3).values(actor="mallory"))
    report = registry.audit.verify()
    assert not report.ok and report.broken_at == 3 and "edited" in report.problem


def test_audit_chain_detects_a_removed_entry(registry: Registry) -> None:
    for i in range(4):
        registry.audit.record("engine", "system", "job.create", f"j{i}")
    with registry.engine.begin() as conn:
        conn.execute(AUDIT.delete().where(AUDIT.c.id == 2))
    report = registry.audit.verify()
    assert not report.ok and report.broken_at == 3


def test_concurrent_appends_keep_one_chain(registry: Registry) -> None:
    # Two writers at once: the write lock makes each append read the true tail.
    def write(who: str) -> None:
        for i in range(25):
            registry.audit.record(who, "operator", "job.cancel", f"{who}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = registry.audit.verify()
    assert report.ok and report.entries == 50


def test_lease_has_one_holder_until_it_expires(registry: Registry) -> None:
    leases = registry.leases
    assert leases.acquire("engine", "w1", 10, now=100.0)
    assert not leases.acquire("engine", "w2", 10, now=105.0)
    assert leases.acquire("engine", "w1", 10, now=108.0)  # renewal
    assert not leases.acquire("engine", "w2", 10, now=117.0)
    assert leases.acquire("engine", "w2", 10, now=118.5)  # w1 stopped renewing
    state = leases.get("engine")
    assert state is not None and state.holder == "w2" and state.expires_at == 128.5
    leases.release("engine", "w1")  # not the holder: nothing happens
    assert leases.get("engine") is not None
    leases.release("engine", "w2")
    assert leases.get("engine") is None


def test_audit_verify_cli_exits_1_on_a_broken_chain(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    reg = Registry.open(db_url)
    reg.audit.record("alice", "operator", "job.create", "j1")
    reg.audit.record("alice", "operator", "job.cancel", "j1")
    cmd = [sys.executable, "-m", "fleet_tui.cli", "--db", db_url, "audit", "verify"]
    env_ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert env_ok.returncode == 0 and "intact: 2 entries" in env_ok.stdout
    with reg.engine.begin() as conn:
        conn.execute(AUDIT.update().where(AUDIT.c.id == 1).values(
            details=sa.literal({"x": 1}, sa.JSON)))
    broken = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and "BROKEN at entry 1" in broken.stdout
    reg.close()


def test_audit_and_alert_ids_go_past_32_bits(registry: Registry) -> None:
    # Both tables only grow: on PostgreSQL their ids are BIGINT (a SERIAL stops at 2^31-1).
    last32 = 2**31 - 1
    alert = {"key": "k", "kind": "offline", "severity": "warning", "details": {}}
    with registry.transaction() as conn:
        conn.execute(AUDIT.insert().values(id=last32, ts=0.0, actor="a", action="x",
                                           details={}, prev_hash="0" * 64, hash="1" * 64))
        conn.execute(ALERT.insert().values(id=last32, **alert))
        if registry.dialect == "postgresql":
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('alert', 'id'), :n)"),
                         {"n": last32})
    assert registry.audit.record("ann", "operator", "job.cancel", "j1").id == 2**31
    with registry.transaction() as conn:
        assert registry.automation.insert_alert(conn, {**alert, "key": "k2"}) == 2**31
    assert registry.automation.get_alert(2**31).key == "k2"
