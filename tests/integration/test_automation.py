"""Schedules, maintenance windows, policies and alerts inside the real engine.

Most scenarios drive the real FleetService's engine tick by tick with a controllable
clock (``JobsEngine.tick(now)``, the very step the lease holder runs every tick) against a
real registry on SQLite and PostgreSQL, feeding presence and telemetry through the
service's own ingest. The webhook and live-window scenarios run the whole fleet, on both
backends too: real mosquitto, simulated devices, the service's own loop, and a local HTTP
server that receives the alerts."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from fleet_tui.config import Settings
from fleet_tui.domain.jobs import JobSettings
from fleet_tui.domain.rollout import RolloutError
from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import Registry
from fleet_tui.service.alerts import list_alerts, recent_alert_counts
from fleet_tui.service.fleet_service import FleetService
from fleet_tui.service.job_control import Actor, Target, create_job, plan_job
from fleet_tui.service.policies import create_policy, load_policy_file, set_policy
from fleet_tui.service.rollouts import act, plan_rollout, start_rollout
from fleet_tui.service.scheduler import create_schedule, set_window
from tests.integration.engine_rig import engine_rig, firmware_server, fleet_rows, write_fleet_dir
from tests.integration.mosquitto import Mosquitto

OPS = Actor("olga", "operator")
APPROVER = Actor("anna", "approver")  # the sample policies roll back: approvers load them
BERLIN = ZoneInfo("Europe/Berlin")
SAMPLE_POLICIES = Path(__file__).resolve().parents[2] / "sample_data" / "policies.toml"


def berlin(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


@pytest.fixture
def fleet(db_url: str, tmp_path: Path) -> Iterator[FleetService]:
    """The real service, not connected: its engine is driven tick by tick."""
    registry = Registry.open(db_url)
    import_fleet(registry, write_fleet_dir(tmp_path / "fleet", fleet_rows(12)))
    settings = Settings(db=db_url, operator="olga", role="approver")
    settings.automation.evaluate_s = 1.0
    service = FleetService(settings, registry)
    # Judge inline, on the test's clock (live, the judging runs on threads of its own).
    service.policies.background = False  # type: ignore[attr-defined]
    service.alerts.background = False  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        registry.close()


def online(service: FleetService, ids: list[str], now: float) -> None:
    for d in ids:
        service.presence.on_presence(d, b'{"state": "online"}', now)


def offline(service: FleetService, ids: list[str], now: float) -> None:
    for d in ids:
        service.presence.on_presence(d, b'{"state": "offline"}', now)


def telemetry(service: FleetService, thing: str, now: float, *, heap_free: int = 120_000,
              uptime_s: int = 1000) -> None:
    payload = {"ts": now, "uptime_s": uptime_s, "heap_free": heap_free, "rssi": -55,
               "cpu_pct": 20.0, "temp_c": 40.0, "reset_reason": "poweron", "errors": 0}
    assert service.telemetry.on_telemetry(thing, orjson.dumps(payload), now)


def ids(n: int) -> list[str]:
    return [f"dev-{i:03d}" for i in range(n)]


def notified(service: FleetService, job_id: str) -> set[str]:
    return {e.device_id for e in service.registry.jobs.executions(job_id)
            if e.notified_at is not None}


# ------------------------------------------------------------------ schedules

def test_nightly_diagnostic_recurs_in_its_zone_across_dst(fleet: FleetService) -> None:
    reg = fleet.registry
    start = berlin(2026, 3, 27, 12, 0)
    s = create_schedule(reg, "job", {"type": "diagnostic", "target": {"group": "plant"}}, OPS,
                        cron="30 2 * * *", tz="Europe/Berlin", schedule_id="nightly",
                        now=start)
    assert s.next_run == berlin(2026, 3, 28, 2, 30)
    fleet.jobs.tick(berlin(2026, 3, 28, 2, 29))
    assert reg.jobs.list_jobs() == []  # not yet
    fleet.jobs.tick(berlin(2026, 3, 28, 2, 30))
    first = reg.automation.get_schedule("nightly")
    assert first.last_result and first.last_result["ok"] and first.last_result["queued"] == 12
    # 29 March: 02:30 does not exist in Berlin; the run comes right after the gap.
    assert first.next_run == berlin(2026, 3, 29, 3, 0)
    fleet.jobs.tick(berlin(2026, 3, 28, 23, 0))
    assert len(reg.jobs.list_jobs()) == 1  # no double run
    fleet.jobs.tick(berlin(2026, 3, 29, 3, 0, 5))
    assert len(reg.jobs.list_jobs()) == 2
    assert reg.automation.get_schedule("nightly").next_run == berlin(2026, 3, 30, 2, 30)
    runs = reg.audit.entries(action="schedule.run")
    assert [e.actor for e in runs] == ["scheduler", "scheduler"]
    assert reg.jobs.get(runs[0].details["job"]).created_by == "schedule:nightly"


def test_one_shot_rollout_starts_at_its_time_and_a_failed_run_is_recorded(
        fleet: FleetService) -> None:
    reg = fleet.registry
    now = 1_900_000_000.0
    with pytest.raises(RolloutError, match=r"type the release version 2\.3\.0"):
        create_schedule(reg, "rollout", {"release": "2.3.0", "group": "plant"}, OPS,
                        at=now + 60, now=now)
    create_schedule(reg, "rollout", {"release": "2.3.0", "group": "plant", "waves": "25,100",
                                     "confirm": "2.3.0"},
                    OPS, at=now + 60, schedule_id="fw", now=now)
    create_schedule(reg, "job", {"type": "reboot", "target": {"where": 'id = "ghost"'}}, OPS,
                    at=now + 60, schedule_id="nothing", now=now)
    fleet.jobs.tick(now + 61)
    fw = reg.automation.get_schedule("fw")
    assert fw.last_result and fw.last_result["ok"] and fw.next_run is None
    assert not fw.enabled
    rollout = reg.rollouts.get(fw.last_result["rollout"])
    assert rollout.status == "RUNNING" and rollout.created_by == "schedule:fw"
    bad = reg.automation.get_schedule("nothing")
    assert bad.last_result and not bad.last_result["ok"]
    assert "no device" in bad.last_result["error"]
    fleet.jobs.tick(now + 120)
    assert len(reg.rollouts.list_rollouts()) == 1  # one-shot: never again


def test_bad_schedules_are_refused_before_anything_is_stored(fleet: FleetService) -> None:
    from fleet_tui.domain.jobs import JobError
    from fleet_tui.domain.schedule import ScheduleError
    from fleet_tui.registry.errors import NotFound

    reg = fleet.registry
    with pytest.raises(ScheduleError, match="cron"):
        create_schedule(reg, "job", {"type": "diagnostic", "target": {"group": "plant"}},
                        OPS, cron="0 25 * * *")
    with pytest.raises(NotFound, match="nope"):
        create_schedule(reg, "rollout", {"release": "2.3.0", "group": "nope",
                                         "confirm": "2.3.0"}, OPS, at=1)
    with pytest.raises(JobError, match="command"):
        create_schedule(reg, "job", {"type": "command", "params": {"command": "x"},
                                     "target": {"group": "plant"}}, OPS, at=1)
    assert reg.automation.list_schedules() == []


# ------------------------------------------------------------ maintenance windows

def test_window_holds_disruptive_jobs_until_it_opens(fleet: FleetService) -> None:
    reg = fleet.registry
    set_window(reg, "plant", "Mon-Fri 01:00-04:00 Europe/Berlin", OPS)
    wednesday_noon = berlin(2026, 12, 2, 12, 0)
    reboot = plan_job(reg, "reboot", {}, Target(group="plant"), JobSettings(concurrency=4))
    create_job(reg, reboot, OPS)
    diag = plan_job(reg, "diagnostic", {}, Target(group="plant"))
    create_job(reg, diag, OPS)
    fleet.jobs.tick(wednesday_noon)
    assert notified(fleet, reboot.job_id) == set()  # outside the window: waits
    assert len(notified(fleet, diag.job_id)) == 12  # not disruptive: goes out
    assert reg.jobs.get(reboot.job_id).status == "IN_PROGRESS"
    fleet.jobs.tick(berlin(2026, 12, 3, 0, 59))
    assert notified(fleet, reboot.job_id) == set()
    fleet.jobs.tick(berlin(2026, 12, 3, 1, 0))
    assert len(notified(fleet, reboot.job_id)) == 4  # open: released at its concurrency


def test_rollout_wave_waits_for_the_window_of_a_subgroup(fleet: FleetService) -> None:
    reg = fleet.registry
    reg.create_group("site-0", kind="dynamic", query='tag.site = "site-0"', parent="plant")
    set_window(reg, "site-0", "Sat,Sun 00:00-06:00 UTC", OPS)
    plan = plan_rollout(reg, "2.3.0", "plant", job_settings=JobSettings(soak_s=0))
    rollout = start_rollout(reg, plan, OPS, confirm="2.3.0")
    wave_job = rollout.waves[0].job_id
    assert wave_job
    in_site0 = set(reg.device_ids(group="site-0"))
    fleet.jobs.tick(datetime(2026, 12, 2, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp())
    started = notified(fleet, wave_job)
    queued = {e.device_id for e in reg.jobs.executions(wave_job) if e.status == "QUEUED"}
    assert not started & in_site0 and queued <= in_site0
    fleet.jobs.tick(datetime(2026, 12, 5, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    assert notified(fleet, wave_job) == {e.device_id for e in reg.jobs.executions(wave_job)
                                         if e.status != "SKIPPED"}


# ------------------------------------------------------------------ policies

def test_unhealthy_for_ten_minutes_gets_a_diagnostic_within_the_rate_limit(
        fleet: FleetService) -> None:
    reg = fleet.registry
    create_policy(reg, {"name": "diag", "when": 'health = "unhealthy"', "for": "10m",
                        "then": "job", "job": {"type": "diagnostic"}, "max_per_hour": 3}, OPS)
    t0 = 1_900_000_000.0
    sick = ids(5)
    online(fleet, ids(12), t0)
    for d in ids(12):
        telemetry(fleet, d, t0, heap_free=5_000 if d in sick else 120_000)
    fleet.jobs.tick(t0)
    fleet.jobs.tick(t0 + 599)
    assert reg.jobs.list_jobs() == []
    fleet.jobs.tick(t0 + 600)
    jobs = reg.jobs.list_jobs()
    assert len(jobs) == 1 and jobs[0].job_type == "diagnostic"
    targeted = {e.device_id for e in reg.jobs.executions(jobs[0].id)}
    assert len(targeted) == 3 and targeted <= set(sick)
    fire = reg.audit.entries(action="policy.fire")[0]
    assert fire.actor == "policy:diag" and set(fire.details["subjects"]) == targeted
    evidence = fire.details["evidence"][sorted(targeted)[0]]
    assert evidence["health"] == "unhealthy" and evidence["heap_free"] == 5_000
    assert evidence["unhealthy_for_s"] >= 600
    held = reg.audit.entries(action="policy.rate_limited")[0]
    assert len(held.details["held_back"]) == 2
    fleet.jobs.tick(t0 + 1200)  # still within the hour: the limit holds
    assert len(reg.jobs.list_jobs()) == 1
    fleet.jobs.tick(t0 + 600 + 3601)  # the hour has passed: the other two get theirs
    assert len(reg.jobs.list_jobs()) == 2


def test_dry_run_audits_what_it_would_do_and_does_nothing(fleet: FleetService) -> None:
    reg = fleet.registry
    names = load_policy_file(reg, SAMPLE_POLICIES, APPROVER)
    assert "diagnose-unhealthy" in names
    set_policy(reg, "diagnose-unhealthy", OPS, dry_run=True)
    t0 = 1_900_000_000.0
    online(fleet, ids(12), t0)
    telemetry(fleet, "dev-004", t0, heap_free=5_000)
    fleet.jobs.tick(t0)
    fleet.jobs.tick(t0 + 600)
    assert reg.jobs.list_jobs() == []
    dry = reg.audit.entries(action="policy.dry_run")
    assert dry[0].details["subjects"] == ["dev-004"] and dry[0].details["would"] == "job"
    # Reloading the file keeps the operator's toggle.
    load_policy_file(reg, SAMPLE_POLICIES, APPROVER)
    assert reg.automation.get_policy("diagnose-unhealthy").dry_run is True


def test_offline_share_halts_every_rollout_touching_the_group(fleet: FleetService) -> None:
    reg = fleet.registry
    load_policy_file(reg, SAMPLE_POLICIES, APPROVER)
    reg.create_group("site-1", kind="dynamic", query='tag.site = "site-1"')
    plan = plan_rollout(reg, "2.3.0", "plant", job_settings=JobSettings(soak_s=0))
    rollout = start_rollout(reg, plan, OPS, confirm="2.3.0")
    t0 = 1_900_000_000.0
    online(fleet, ids(12), t0)
    fleet.jobs.tick(t0)
    assert reg.rollouts.get(rollout.id).status == "RUNNING"
    site1 = reg.device_ids(group="site-1")
    offline(fleet, site1[:2], t0 + 5)  # 2 of 6 in site-1: 33% of that group
    fleet.jobs.tick(t0 + 10)
    halted = reg.rollouts.get(rollout.id)
    assert halted.status == "HALTED" and "halt-rollouts-on-offline" in halted.reason
    entry = reg.audit.entries(action="rollout.halt")[0]
    assert entry.actor == "policy:halt-rollouts-on-offline"
    fire = reg.audit.entries(action="policy.fire")[0]
    assert fire.details["halted"] == [rollout.id]
    assert fire.details["evidence"]["site-1"]["offline_share"] == pytest.approx(2 / 6, 1e-3)
    # The alert monitor saw the halt and raised its alert.
    fleet.jobs.tick(t0 + 12)
    kinds = {(a.kind, a.subject) for a in list_alerts(reg, status="open")}
    assert ("rollout_halted", rollout.id) in kinds
    act(reg, rollout.id, "resume", OPS)
    online(fleet, site1[:2], t0 + 14)
    fleet.jobs.tick(t0 + 15)
    assert ("rollout_halted", rollout.id) not in {
        (a.kind, a.subject) for a in list_alerts(reg, status="open")}


def test_reboot_loop_after_an_update_rolls_the_device_back(fleet: FleetService) -> None:
    reg = fleet.registry
    load_policy_file(reg, SAMPLE_POLICIES, APPROVER)
    t0 = 1_900_000_000.0
    update = plan_job(reg, "firmware_update", {"release": "2.3.0"},
                      Target(device_ids=("dev-001", "dev-002")), JobSettings(soak_s=300),
                      per_device={"dev-001": {"from": "2.2.0"}, "dev-002": {"from": "2.2.0"}})
    create_job(reg, update, OPS)
    online(fleet, ids(12), t0)
    fleet.jobs.tick(t0)  # released: IN_PROGRESS, carried by the shadow
    assert {e.status for e in reg.jobs.executions(update.job_id)} == {"IN_PROGRESS"}
    # Both boot the new version (the shadow service mirrors this into the registry) ...
    reg.apply_reported({d: {"firmware_version": "2.3.0", "hardware_rev": "rev-b"}
                        for d in ("dev-001", "dev-002")})
    # ... and dev-001 keeps resetting.
    for i, uptime in enumerate([300, 5, 300, 5, 300, 5, 300, 5]):  # resets every minute
        telemetry(fleet, "dev-001", t0 + 30 * (i + 1), uptime_s=uptime)
        telemetry(fleet, "dev-002", t0 + 30 * (i + 1), uptime_s=1000 + 30 * i)
    fleet.jobs.tick(t0 + 300)
    ex = {e.device_id: e for e in reg.jobs.executions(update.job_id)}
    assert ex["dev-001"].status == "FAILED" and ex["dev-002"].status == "IN_PROGRESS"
    fire = reg.audit.entries(action="policy.fire")[0]
    assert fire.details["rolled_back"] == ["dev-001"], fire.details
    assert fire.details["evidence"]["dev-001"]["reboot_loop"] is True
    back = reg.jobs.executions(fire.details["job"])
    assert [(e.device_id, (e.params or {}).get("release")) for e in back] == [
        ("dev-001", "2.2.0")]


def test_policies_disabled_do_nothing_and_bad_files_change_nothing(
        fleet: FleetService, tmp_path: Path) -> None:
    from fleet_tui.domain.policy import PolicyError

    reg = fleet.registry
    load_policy_file(reg, SAMPLE_POLICIES, APPROVER)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[policy]]\nname = "x"\nwhen = "health = "\nthen = "alert"\n')
    with pytest.raises(PolicyError, match=r"#1.*when: col"):
        load_policy_file(reg, bad, OPS)
    assert {p.name for p in reg.automation.list_policies()} == {
        "diagnose-unhealthy", "halt-rollouts-on-offline", "rollback-reboot-loop",
        "hot-devices"}
    set_policy(reg, "diagnose-unhealthy", OPS, enabled=False)
    t0 = 1_900_000_000.0
    online(fleet, ids(12), t0)
    telemetry(fleet, "dev-004", t0, heap_free=5_000)
    fleet.jobs.tick(t0)
    fleet.jobs.tick(t0 + 700)
    assert reg.jobs.list_jobs() == []


# ------------------------------------------------------------------ alerts

def test_alerts_raise_dedupe_resolve_and_count_per_group(fleet: FleetService) -> None:
    reg = fleet.registry
    t0 = 1_900_000_000.0
    online(fleet, ids(12), t0)
    fleet.jobs.tick(t0)
    assert list_alerts(reg) == []
    offline(fleet, ids(4), t0 + 1)
    for k in range(3):
        fleet.jobs.tick(t0 + 2 + k * 2)
    spikes = list_alerts(reg, kind="offline_spike")
    assert len(spikes) == 1 and spikes[0].count == 3 and spikes[0].group_name == "plant"
    assert spikes[0].details["offline"] == 4 and spikes[0].severity == "warning"
    online(fleet, ids(4), t0 + 10)
    fleet.jobs.tick(t0 + 11)
    assert list_alerts(reg, status="open") == []
    assert list_alerts(reg, kind="offline_spike")[0].status == "resolved"
    assert recent_alert_counts(reg, now=t0 + 12) == {"plant": 1}
    assert [e.action for e in reg.audit.entries(action="alert.*")] == ["alert.raise",
                                                                      "alert.resolve"]


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return None


async def test_alerts_reach_the_webhook_from_the_running_fleet(
        mosquitto: Mosquitto, tmp_path: Path, db_url: str) -> None:
    _Hook.received = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        with firmware_server() as base_url:
            async with engine_rig(mosquitto, db_url, tmp_path, base_url,
                                  rows=fleet_rows(8)) as rig:
                rig.settings.automation.evaluate_s = 0.5
                rig.settings.automation.webhook_url = (
                    f"http://127.0.0.1:{hook.server_address[1]}/alerts")
                await rig.start_service()
                # Nothing is online yet: the whole plant is dark.
                await rig.until(lambda: any(m["event"] == "alert.raised"
                                            for m in _Hook.received), 20, "raised alert")
                raised = next(m for m in _Hook.received if m["event"] == "alert.raised")
                assert raised["alert"]["kind"] == "offline_spike"
                assert raised["alert"]["group_name"] == "plant"
                await rig.start_fleet()
                await rig.until(lambda: any(m["event"] == "alert.resolved"
                                            for m in _Hook.received), 30, "resolved alert")
                # Marked delivered once the webhook answered 2xx (just after it received).
                await rig.until(lambda: rig.registry.automation.undelivered() == [], 10,
                                "delivery marks")
                events = [(m["event"], m["alert"]["id"]) for m in _Hook.received]
                assert events[:2] == [("alert.raised", 1), ("alert.resolved", 1)]
                await rig.stop_service()
                # The delivery thread stops with the service (it used to poll the registry
                # every 30 s for good, long after the test had dropped the database).
                assert not any(t.name == "alert-webhook" and t.is_alive()
                               for t in threading.enumerate())
    finally:
        hook.shutdown()
        hook.server_close()


def test_a_failing_policy_is_audited_and_the_engine_tick_goes_on(fleet: FleetService) -> None:
    reg = fleet.registry
    create_policy(reg, {"name": "broken", "when": "online = true", "then": "job",
                        "job": {"type": "command", "params": {"command": "explode"}}}, OPS)
    diag = plan_job(reg, "diagnostic", {}, Target(group="plant"))
    create_job(reg, diag, OPS)
    t0 = 1_900_000_000.0
    online(fleet, ids(12), t0)
    fleet.jobs.tick(t0)
    assert len(notified(fleet, diag.job_id)) == 12  # the rest of the tick committed
    error = reg.audit.entries(action="policy.error")[0]
    assert error.target == "broken" and "command" in error.details["error"]
    assert reg.audit.entries(action="policy.fire") == []


async def test_live_window_holds_a_rollout_then_a_policy_halts_it(
        mosquitto: Mosquitto, tmp_path: Path, db_url: str) -> None:
    """The whole fleet, live: the service's own loop, simulated devices, real broker."""
    import time as _time

    from fleet_tui.service.scheduler import delete_window

    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    other_day = days[(_time.gmtime().tm_wday + 3) % 7]
    with firmware_server() as base_url:
        async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
            rig.settings.automation.evaluate_s = 0.5
            reg = rig.registry
            create_policy(reg, {"name": "halt-on-offline", "scope": "group",
                                "when": "offline_share > 0.2 and active_rollouts > 0",
                                "then": "halt_rollouts"}, OPS)
            set_window(reg, "plant", f"{other_day} 00:00-00:01 UTC", OPS)
            await rig.start_service()
            await rig.start_fleet()
            plan = plan_rollout(reg, "2.3.0", "plant", job_settings=JobSettings(soak_s=30))
            rollout = start_rollout(reg, plan, OPS, confirm="2.3.0")
            wave_job = rollout.waves[0].job_id
            assert wave_job
            await asyncio.sleep(2.0)  # ten engine ticks: the window keeps every device waiting
            execs = reg.jobs.executions(wave_job)
            assert execs and all(e.status == "QUEUED" and e.notified_at is None for e in execs)
            delete_window(reg, "plant", OPS)
            await rig.until(lambda: all(e.status != "QUEUED"
                                        for e in reg.jobs.executions(wave_job)), 20,
                            "the wave to start once the window is gone")
            assert rig.fleet is not None
            for thing in ("dev-008", "dev-009", "dev-010", "dev-011"):
                await rig.fleet[thing].stop()  # a third of the plant goes offline
            await rig.until(lambda: reg.rollouts.get(rollout.id).status == "HALTED", 20,
                            "the policy to halt the rollout")
            assert "halt-on-offline" in reg.rollouts.get(rollout.id).reason
            fire = reg.audit.entries(action="policy.fire")[0]
            assert fire.details["evidence"]["plant"]["offline"] >= 4
            await rig.until(lambda: {a.kind for a in list_alerts(reg, status="open")}
                            >= {"rollout_halted", "offline_spike"}, 20, "the alerts")


def test_the_service_layer_checks_roles_for_automation(fleet: FleetService) -> None:
    from fleet_tui.domain.roles import RoleError

    reg = fleet.registry
    viewer = Actor("vera", "viewer")
    with pytest.raises(RoleError, match="viewer"):
        create_schedule(reg, "job", {"type": "diagnostic", "target": {"group": "plant"}},
                        viewer, at=1)
    with pytest.raises(RoleError, match="start rollout"):
        create_schedule(reg, "rollout", {"release": "2.3.0", "group": "plant",
                                         "confirm": "2.3.0"}, viewer, at=1)
    with pytest.raises(RoleError):
        set_window(reg, "plant", "daily 01:00-02:00", viewer)
    with pytest.raises(RoleError, match="rollback"):
        create_policy(reg, {"name": "rb", "when": "reboot_loop = true",
                            "then": "rollback"}, OPS)  # rolling back is the approver's
    assert reg.automation.list_schedules() == [] and reg.automation.list_policies() == []
    assert reg.automation.windows() == {}
