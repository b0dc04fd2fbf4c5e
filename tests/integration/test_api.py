"""The Fleet HTTP API over real HTTP (uvicorn on a free port) against a real registry on
SQLite and PostgreSQL and the real service through a real mosquitto: every endpoint, the
token roles, the audit trail of mutating calls, RFC 9457 problem documents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import Registry
from tests.integration.api_rig import (
    APPROVER,
    APPROVER2,
    OPERATOR,
    VIEWER,
    ApiServer,
    api_server,
    api_settings,
)
from tests.integration.engine_rig import fleet_rows, write_fleet_dir
from tests.integration.mosquitto import Mosquitto


@pytest.fixture
def api(mosquitto: Mosquitto, db_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    registry = Registry.open(db_url)
    import_fleet(registry, write_fleet_dir(tmp_path / "fleet", fleet_rows(12)))
    try:
        with api_server(registry, api_settings(db_url, mosquitto.url)) as server:
            yield server
    finally:
        registry.close()


def _problem(resp: object, status: int) -> dict:  # type: ignore[type-arg]
    assert resp.status_code == status, resp.text  # type: ignore[attr-defined]
    assert resp.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body = resp.json()  # type: ignore[attr-defined]
    assert body["status"] == status and body["type"].startswith("https://")
    assert body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


def _until(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_tokens_roles_and_problem_documents(api: ApiServer) -> None:
    with api.client() as anon, api.client(VIEWER) as viewer, \
            api.client({"Authorization": "Bearer nope"}) as bad:
        body = _problem(anon.get("/api/groups"), 401)
        assert body["instance"] == "/api/groups"
        assert anon.get("/api/groups").headers["www-authenticate"] == "Bearer"
        _problem(bad.get("/api/groups"), 401)
        assert viewer.get("/api/groups").status_code == 200
        body = _problem(viewer.post("/api/groups", json={"name": "x", "kind": "folder"}), 403)
        assert "vera is viewer" in body["detail"]
        _problem(viewer.get("/api/no-such-endpoint"), 404)
        body = _problem(viewer.get("/api/groups/plant/devices", params={"limit": 0}), 422)
        assert body["errors"][0]["loc"][-1] == "limit"


def test_groups_devices_and_health(api: ApiServer) -> None:
    with api.client(OPERATOR) as op:
        created = op.post("/api/groups", json={
            "name": "rev-a-fleet", "kind": "dynamic", "query": 'hardware_rev = "rev-a"',
            "parent": "plant"})
        assert created.status_code == 201, created.text
        assert created.json()["devices"] == 4 and created.json()["parent"] == "plant"
        _problem(op.post("/api/groups", json={"name": "rev-a-fleet", "kind": "folder"}), 409)
        _problem(op.post("/api/groups", json={"name": "q", "kind": "dynamic",
                                              "query": "a =="}), 400)
        group = op.get("/api/groups/plant").json()
        assert group["devices"] == 12 and group["children"] == ["rev-a-fleet"]
        assert {g["name"] for g in op.get("/api/groups").json()} >= {"plant", "rev-a-fleet"}
        _problem(op.get("/api/groups/nope"), 404)

        page = op.get("/api/groups/plant/devices",
                      params={"limit": 3, "offset": 2, "where": 'tag.site = "site-0"'}).json()
        assert page["total"] == 6 and [d["id"] for d in page["devices"]] == [
            "dev-002", "dev-006", "dev-007"]
        body = _problem(op.get("/api/groups/plant/devices", params={"where": "site = "}), 400)
        assert body["column"] == 8  # the end of the query: a value is missing

        health = op.get("/api/groups/plant/health").json()
        assert health["summary"]["total"] == 12
        # No device is online: the alert monitor of the running service says so.
        _until(lambda: op.get("/api/groups/plant/health").json()["recent_alerts"], 10,
               "the offline alert")
        health = op.get("/api/groups/plant/health").json()
        assert [a["kind"] for a in health["open_alerts"]] == ["offline_spike"]
        assert health["open_alerts"][0]["severity"] == "critical"

    entry = api.registry.audit.entries(action="group.create")[0]
    assert (entry.actor, entry.role, entry.target) == ("olga", "operator", "rev-a-fleet")


def test_jobs_create_progress_cancel(api: ApiServer) -> None:
    with api.client(OPERATOR) as op:
        dry = op.post("/api/jobs", json={"type": "reboot", "target": {"group": "plant"},
                                         "dry_run": True}).json()
        assert dry["created"] is False and dry["queued"] == 12
        _problem(op.get(f"/api/jobs/{dry['job_id']}"), 404)
        resp = op.post("/api/jobs", json={"type": "diagnostic", "id": "diag-1",
                                          "target": {"devices": ["dev-000", "dev-001", "ghost"]},
                                          "settings": {"concurrency": 1}})
        assert resp.status_code == 201, resp.text
        assert resp.json()["queued"] == 2 and resp.json()["skip_reasons"] == {
            "not in the registry": 1}
        job = op.get("/api/jobs/diag-1").json()
        assert job["status"] == "IN_PROGRESS" and job["created_by"] == "olga"
        progress = op.get("/api/jobs/diag-1/progress").json()
        assert progress["total"] == 2 and progress["finished"] == 0
        assert "diag-1" in [j["id"] for j in op.get("/api/jobs").json()]
        _problem(op.post("/api/jobs", json={"type": "command", "params": {"command": "x"},
                                            "target": {"group": "plant"}}), 400)
        _problem(op.post("/api/jobs", json={"type": "reboot", "target": {"group": "plant"},
                                            "settings": {"ramp_up": 3}}), 400)
        cancel = op.post("/api/jobs/diag-1/cancel", json={"reason": "test"}).json()
        assert cancel["canceled_queued"] + cancel["left_in_progress"] == 2
        _problem(op.post("/api/jobs/diag-1/cancel"), 400)
        progress = op.get("/api/jobs/diag-1/progress").json()
        assert progress["status"] == "CANCELED"
    actions = [(e.action, e.actor) for e in api.registry.audit.entries(target="diag-1")]
    assert actions == [("job.create", "olga"), ("job.cancel", "olga")]


def test_shadow_get_and_update_desired_through_the_service(api: ApiServer) -> None:
    with api.client(OPERATOR) as op:
        answer = op.patch("/api/devices/dev-003/shadow/desired",
                          json={"desired": {"led_is_on": True}})
        assert answer.status_code == 200, answer.text
        version = answer.json()["version"]
        doc = op.get("/api/devices/dev-003/shadow").json()
        assert doc["state"]["desired"] == {"led_is_on": True} and doc["version"] == version
        body = _problem(op.patch("/api/devices/dev-003/shadow/desired",
                                 json={"desired": {"led_is_on": False}, "version": 999}), 409)
        assert "409" in body["detail"]
        _problem(op.get("/api/devices/nobody-here/shadow"), 404)
    entry = api.registry.audit.entries(action="shadow.update")[0]
    assert entry.actor == "olga" and entry.details["desired"] == {"led_is_on": True}


def test_rollouts_plan_start_actions(api: ApiServer) -> None:
    with api.client(OPERATOR) as op, api.client(APPROVER) as ap, \
            api.client(APPROVER2) as ap2:
        spec = {"release": "2.3.0", "group": "plant", "waves": "25,100",
                "gates": {"soak_s": 0}}
        plan = op.post("/api/rollouts/plan", json=spec).json()
        waves = [w["devices"] for w in plan["waves"]]
        assert len(waves) == 2 and sum(waves) + len(plan["skipped"]) == 12
        assert plan["release"] == "2.3.0" and all(s["reason"] for s in plan["skipped"])
        _problem(op.post("/api/rollouts", json={**spec, "confirm": "2.2.0"}), 400)
        started = op.post("/api/rollouts", json={**spec, "confirm": "2.3.0"})
        assert started.status_code == 201, started.text
        rid = started.json()["id"]
        assert started.json()["status"] == "RUNNING"
        assert op.get(f"/api/rollouts/{rid}").json()["waves"][0]["status"] == "RUNNING"
        _problem(ap.post(f"/api/rollouts/{rid}/approve"), 409)  # running, not waiting
        _problem(op.post(f"/api/rollouts/{rid}/approve"), 403)  # operator may not approve
        halted = op.post(f"/api/rollouts/{rid}/halt", json={"reason": "look first"}).json()
        assert halted["status"] == "HALTED" and halted["reason"] == "look first"
        _problem(op.post(f"/api/rollouts/{rid}/halt"), 409)
        assert op.post(f"/api/rollouts/{rid}/resume").json()["status"] == "RUNNING"
        _problem(op.post(f"/api/rollouts/{rid}/rollback"), 403)  # rolling back: approvers
        rolled = ap.post(f"/api/rollouts/{rid}/rollback").json()
        assert rolled["status"] in ("ROLLED_BACK", "ROLLING_BACK")
        assert rid in [r["id"] for r in op.get("/api/rollouts").json()]
        _problem(ap2.post("/api/rollouts/nope/cancel"), 404)
    actions = [e.action for e in api.registry.audit.entries(target=rid, actor="olga")]
    assert actions[:4] == ["rollout.start", "rollout.wave.start", "rollout.halt",
                           "rollout.resume"]


def test_schedules_windows_policies_alerts_audit(api: ApiServer) -> None:
    with api.client(OPERATOR) as op, api.client(VIEWER) as viewer:
        _problem(op.post("/api/schedules", json={"kind": "job", "spec": {
            "type": "diagnostic", "target": {"group": "plant"}}, "cron": "61 * * * *"}), 400)
        _problem(op.post("/api/schedules", json={"kind": "job", "spec": {
            "type": "diagnostic", "target": {"group": "nope"}}, "at": 1}), 404)
        made = op.post("/api/schedules", json={
            "kind": "job", "id": "now-diag", "at": time.time() - 1,
            "spec": {"type": "diagnostic", "target": {"group": "plant"}}})
        assert made.status_code == 201, made.text
        nightly = op.post("/api/schedules", json={
            "kind": "job", "id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
            "spec": {"type": "diagnostic", "target": {"group": "plant"}}}).json()
        assert nightly["next_run"] > time.time()
        # The running service's engine runs the due one-shot schedule on its next tick.
        ran = _until(lambda: op.get("/api/schedules/now-diag").json()["last_result"], 15,
                     "the scheduled run")
        assert ran["ok"] and op.get(f"/api/jobs/{ran['job']}").json()["counts"]["QUEUED"] == 12
        assert {s["id"] for s in viewer.get("/api/schedules").json()} == {"now-diag",
                                                                          "nightly"}
        assert op.delete("/api/schedules/nightly").status_code == 204
        _problem(op.delete("/api/schedules/nightly"), 404)

        _problem(op.put("/api/groups/plant/window", json={"window": "Mon-Xyz 01:00-02:00"}),
                 400)
        window = op.put("/api/groups/plant/window",
                        json={"window": "Mon-Fri 01:00-04:00 Europe/Berlin"}).json()
        assert window["window"] == "Mon-Fri 01:00-04:00 Europe/Berlin"
        assert op.get("/api/groups/plant").json()["window"] == window["window"]
        assert viewer.get("/api/windows").json()[0]["group"] == "plant"
        assert op.delete("/api/groups/plant/window").status_code == 204

        policy = op.post("/api/policies", json={"definition": {
            "name": "diag-unhealthy", "when": 'health = "unhealthy"', "for": "10m",
            "then": "job", "job": {"type": "diagnostic"}, "max_per_hour": 20},
            "dry_run": True})
        assert policy.status_code == 201, policy.text
        _problem(op.post("/api/policies", json={"definition": {
            "name": "bad", "when": "health = ", "then": "job"}}), 400)
        toggled = op.patch("/api/policies/diag-unhealthy", json={"enabled": False}).json()
        assert toggled["enabled"] is False and toggled["dry_run"] is True
        assert viewer.get("/api/policies").json()[0]["name"] == "diag-unhealthy"
        _problem(op.patch("/api/policies/nope", json={"enabled": True}), 404)

        alerts = _until(lambda: viewer.get("/api/alerts", params={"status": "open"}).json(),
                        10, "the offline alert")
        assert {(a["kind"], a["group_name"]) for a in alerts} == {("offline_spike", "plant")}
        counts = viewer.get("/api/alerts/counts").json()
        assert counts["open_by_severity"]["critical"] == 1
        assert counts["recent_alerts"] == {"plant": 1}
        _problem(viewer.post(f"/api/alerts/{alerts[0]['id']}/resolve"), 403)
        resolved = op.post(f"/api/alerts/{alerts[0]['id']}/resolve").json()
        assert resolved["status"] == "resolved"
        _problem(op.post(f"/api/alerts/{alerts[0]['id']}/resolve"), 404)
        _problem(op.post("/api/alerts/999/resolve"), 404)

        entries = viewer.get("/api/audit", params={"actor": "olga", "limit": 50}).json()
        assert {"schedule.create", "schedule.delete", "window.set", "window.delete",
                "policy.create", "policy.update", "alert.resolve"} <= {
                    e["action"] for e in entries}
        run = viewer.get("/api/audit", params={"action": "schedule.run"}).json()[0]
        assert run["target"] == "now-diag" and run["details"]["ok"] is True


def test_values_devices_could_not_decode_are_refused(api: ApiServer) -> None:
    with api.client(OPERATOR) as op:
        body = _problem(op.patch("/api/devices/dev-001/shadow/desired",
                                 json={"desired": {"led_is_on": 2**70}}), 422)
        assert "64-bit" in body["detail"] or "encodable" in body["detail"]
        _problem(op.post("/api/jobs", json={"type": "config_update", "params": {
            "values": {"telemetry_interval_s": 2**80}}, "target": {"group": "plant"}}), 422)
    assert api.registry.jobs.list_jobs() == []
