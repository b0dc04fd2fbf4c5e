"""The Fleet HTTP API (FastAPI): groups, devices, health, jobs, shadows, rollouts,
schedules, maintenance windows, policies, alerts and the audit log.

Every endpoint calls the same service-layer function as the console and the CLI (no rule
lives here); mutating calls need a bearer token whose role allows them, and land in the
audit log under the token's operator. Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

import orjson
from fastapi import Body, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet_tui.api.auth import TokenTable, require
from fleet_tui.api.problems import ApiProblem, install, problem_responses
from fleet_tui.config import Settings
from fleet_tui.domain import roles
from fleet_tui.domain.jobs import JobError, JobSettings
from fleet_tui.domain.rollout import Gates, RolloutError, WaveSpec
from fleet_tui.registry.registry import GroupNode, Registry
from fleet_tui.service import alerts as alert_service
from fleet_tui.service import policies as policy_service
from fleet_tui.service import scheduler as schedule_service
from fleet_tui.service.health_report import group_health_report
from fleet_tui.service.job_control import Actor, Target, cancel_job, create_job, plan_job
from fleet_tui.service.rollouts import (
    ACTION_PERMISSION,
    act,
    plan_rollout,
    start_rollout,
    wave_status_counts,
)

ERRORS = problem_responses(400, 401, 403, 404, 409, 422)
SHADOW_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 502)
Name = Annotated[str, Path(min_length=1, max_length=128)]
Limit = Annotated[int, Query(ge=1, le=1000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _encodable(self) -> Strict:
        # Free-form objects end up in MQTT payloads encoded by orjson (64-bit integers
        # only): refuse here what would fail later inside the engine.
        try:
            orjson.dumps(self.model_dump())
        except TypeError as err:
            raise ValueError(f"not encodable as JSON for devices: {err}") from None
        return self


# ------------------------------------------------------------------ models

class GroupIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    kind: Literal["static", "dynamic", "folder"] | None = None
    query: str | None = Field(default=None, max_length=4000)
    parent: str | None = Field(default=None, max_length=128)
    members: list[Annotated[str, Field(max_length=128)]] = Field(default=[], max_length=10000)
    description: str = Field(default="", max_length=1000)


class GroupOut(BaseModel):
    name: str
    kind: str
    query: str | None
    parent: str | None
    description: str
    children: list[str]
    devices: int
    window: str | None


class DeviceOut(BaseModel):
    id: str
    hardware_rev: str | None
    firmware_version: str | None
    online: bool
    last_seen: float | None
    health: str | None


class DevicePage(BaseModel):
    group: str
    where: str | None
    total: int
    offset: int
    limit: int
    devices: list[DeviceOut]


class TargetIn(Strict):
    group: str | None = Field(default=None, max_length=128)
    where: str | None = Field(default=None, max_length=4000)
    devices: list[Annotated[str, Field(max_length=128)]] | None = Field(default=None,
                                                                         max_length=100000)


class JobIn(Strict):
    type: Literal["config_update", "firmware_update", "command", "reboot", "diagnostic"]
    params: dict[str, Any] = {}
    target: TargetIn
    settings: dict[str, Any] = {}
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    dry_run: bool = False


class JobPlanOut(BaseModel):
    job_id: str
    type: str
    created: bool
    queued: int
    skipped: int
    skip_reasons: dict[str, int]
    estimated_s: float | None
    document: dict[str, Any]


class JobOut(BaseModel):
    id: str
    type: str
    status: str
    reason: str
    document: dict[str, Any]
    target: dict[str, Any]
    settings: dict[str, Any]
    rollout_id: str | None
    created_by: str
    created_at: float
    updated_at: float
    counts: dict[str, int]


class ProgressOut(BaseModel):
    id: str
    status: str
    total: int
    finished: int
    percent: float
    counts: dict[str, int]


class CancelIn(Strict):
    force: bool = False
    reason: str = Field(default="", max_length=500)


class CancelOut(BaseModel):
    job_id: str
    canceled_queued: int
    canceled_in_progress: int
    left_in_progress: int


class DesiredIn(Strict):
    desired: dict[str, Any] | None
    version: int | None = Field(default=None, ge=0, le=2**63 - 1)


class RolloutIn(Strict):
    release: str = Field(min_length=1, max_length=64)
    group: str = Field(min_length=1, max_length=128)
    waves: str = Field(default="1,10,50,100", max_length=500)
    gates: dict[str, Any] = {}
    job_settings: dict[str, Any] = {}


class RolloutStartIn(RolloutIn):
    confirm: str = Field(max_length=64, description="the release version, typed out")


class ActionIn(Strict):
    reason: str = Field(default="", max_length=500)


class ScheduleIn(Strict):
    kind: Literal["job", "rollout"]
    spec: dict[str, Any]
    at: float | None = Field(default=None, ge=0, le=32503680000)
    cron: str | None = Field(default=None, max_length=128)
    timezone: str = Field(default="UTC", max_length=64)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class WindowIn(Strict):
    window: str = Field(min_length=1, max_length=256,
                        examples=["Mon-Fri 01:00-04:00 Europe/Berlin"])


class PolicyPatch(Strict):
    enabled: bool | None = None
    dry_run: bool | None = None


class PolicyIn(Strict):
    definition: dict[str, Any]
    enabled: bool = True
    dry_run: bool = False


# ------------------------------------------------------------------ helpers

# JobSettings and Gates check values, not JSON types: a wrong type from a client is a 400.
BAD_SHAPE = (TypeError, ValueError, AttributeError, KeyError)


def _settings(d: dict[str, Any]) -> JobSettings:
    try:
        return JobSettings.from_dict(d)
    except BAD_SHAPE as err:
        raise JobError(f"settings: {err}") from None


def _gates(d: dict[str, Any]) -> Gates:
    try:
        return Gates.from_dict(d)
    except BAD_SHAPE as err:
        raise RolloutError(f"gates: {err}") from None


def _target(t: TargetIn) -> Target:
    return Target(group=t.group, where=t.where,
                  device_ids=tuple(t.devices) if t.devices is not None else None)


def _group_out(registry: Registry, node: GroupNode) -> GroupOut:
    parent = None
    if node.parent_id is not None:
        parent = next((g.name for g in alert_service.all_groups(registry)
                       if g.id == node.parent_id), None)
    return GroupOut(name=node.name, kind=node.kind, query=node.query, parent=parent,
                    description=node.description,
                    children=sorted(c.name for c in node.children),
                    devices=registry.count_devices(group=node.name),
                    window=registry.automation.windows().get(node.name))


def _job_out(registry: Registry, job_id: str) -> JobOut:
    job = registry.jobs.get(job_id)
    return JobOut(id=job.id, type=job.job_type, status=job.status, reason=job.reason,
                  document=job.document, target=job.target, settings=job.settings,
                  rollout_id=job.rollout_id, created_by=job.created_by,
                  created_at=job.created_at, updated_at=job.updated_at,
                  counts=registry.jobs.counts([job.id])[job.id])


def _rollout(registry: Registry, rollout_id: str) -> dict[str, Any]:
    r = registry.rollouts.get(rollout_id)
    return {"id": r.id, "release": r.release_version, "previous_version": r.previous_version,
            "group": r.group_name, "status": r.status, "reason": r.reason,
            "current_wave": r.current_wave, "created_by": r.created_by,
            "created_at": r.created_at, "updated_at": r.updated_at, "gates": r.gates,
            "waves": wave_status_counts(registry, r)}


# ------------------------------------------------------------------ the app

def create_app(registry: Registry, settings: Settings, tokens: TokenTable | None = None
               ) -> FastAPI:
    tokens = tokens or TokenTable.from_settings(settings)
    app = FastAPI(title="fleet-tui Fleet API", version="1",
                  description="Groups, devices, jobs, shadows, rollouts, schedules, "
                              "maintenance windows, policies, alerts and the audit log.")
    install(app)
    # One dependency per permission of roles.py: an endpoint names what it needs.
    can = {permission: Depends(require(tokens, permission)) for permission in roles.ACTIONS}
    viewer = can[roles.VIEW]

    def get(path: str, **kw: Any) -> Callable[[Any], Any]:
        return app.get(path, responses=ERRORS, **kw)

    def post(path: str, **kw: Any) -> Callable[[Any], Any]:
        return app.post(path, responses=ERRORS, **kw)

    # -------------------------------------------------------------- groups
    @get("/api/groups", response_model=list[GroupOut], tags=["groups"])
    def list_groups(actor: Actor = viewer) -> list[GroupOut]:
        return [_group_out(registry, g) for g in alert_service.all_groups(registry)]

    @post("/api/groups", status_code=201, response_model=GroupOut, tags=["groups"])
    def create_group(body: GroupIn, actor: Actor = can[roles.EDIT_GROUPS]) -> GroupOut:
        node = registry.create_group(body.name, kind=body.kind, query=body.query,
                                     parent=body.parent, members=body.members,
                                     description=body.description)
        registry.audit.record(actor.name, actor.role, "group.create", node.name,
                              body.model_dump())
        return _group_out(registry, registry.get_group(node.name))

    @get("/api/groups/{group_id}", response_model=GroupOut, tags=["groups"])
    def get_group(group_id: Name, actor: Actor = viewer) -> GroupOut:
        return _group_out(registry, registry.get_group(group_id))

    @get("/api/groups/{group_id}/devices", response_model=DevicePage, tags=["groups"])
    def group_devices(group_id: Name, actor: Actor = viewer,
                      where: Annotated[str | None, Query(max_length=4000)] = None,
                      offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                      limit: Limit = 50,
                      order_by: Literal["id", "firmware_version", "hardware_rev", "online",
                                        "health", "last_seen"] = "id") -> DevicePage:
        registry.get_group(group_id)
        where = where or None
        rows = registry.list_devices(group=group_id, where=where, offset=offset, limit=limit,
                                     order_by=order_by)
        total = registry.count_devices(group=group_id, where=where)
        return DevicePage(group=group_id, where=where, total=total, offset=offset,
                          limit=limit, devices=[DeviceOut(**asdict(r)) for r in rows])

    @get("/api/groups/{group_id}/health", tags=["groups"])
    def group_health(group_id: Name, actor: Actor = viewer) -> dict[str, Any]:
        registry.get_group(group_id)
        report = group_health_report(registry, group=group_id)
        counts = alert_service.recent_alert_counts(
            registry, window_s=settings.automation.recent_alerts_s)
        report["recent_alerts"] = counts.get(group_id, 0)
        report["open_alerts"] = [a.to_dict() for a in alert_service.list_alerts(
            registry, status="open", group=group_id, limit=50)]
        return report

    @app.put("/api/groups/{group_id}/window", responses=ERRORS, tags=["windows"])
    def set_window(group_id: Name, body: WindowIn,
                   actor: Actor = can[roles.EDIT_GROUPS]) -> dict[str, Any]:
        w = schedule_service.set_window(registry, group_id, body.window, actor)
        return {"group": group_id, "window": w.text, "open": w.is_open(time.time())}

    @app.delete("/api/groups/{group_id}/window", status_code=204, responses=ERRORS,
                tags=["windows"])
    def delete_window(group_id: Name, actor: Actor = can[roles.EDIT_GROUPS]) -> None:
        schedule_service.delete_window(registry, group_id, actor)

    @get("/api/windows", tags=["windows"])
    def list_windows(actor: Actor = viewer) -> list[dict[str, Any]]:
        return schedule_service.window_status(registry)

    # -------------------------------------------------------------- jobs
    @post("/api/jobs", status_code=201, response_model=JobPlanOut, tags=["jobs"])
    def create_job_endpoint(body: JobIn, actor: Actor = can[roles.CREATE_JOB]) -> JobPlanOut:
        plan = plan_job(registry, body.type, body.params, _target(body.target),
                        _settings(body.settings), job_id=body.id)
        if not body.dry_run:
            create_job(registry, plan, actor)
        s = plan.summary()
        return JobPlanOut(job_id=plan.job_id, type=plan.job_type, created=not body.dry_run,
                          queued=s["queued"], skipped=s["skipped"],
                          skip_reasons=s["skip_reasons"], estimated_s=s["estimated_s"],
                          document=plan.document)

    @get("/api/jobs", response_model=list[JobOut], tags=["jobs"])
    def list_jobs(actor: Actor = viewer, limit: Limit = 50,
                  status: Annotated[list[str] | None, Query(max_length=10)] = None
                  ) -> list[JobOut]:
        return [_job_out(registry, j.id) for j in registry.jobs.list_jobs(
            status=status, limit=limit)]

    @get("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
    def get_job(job_id: Name, actor: Actor = viewer) -> JobOut:
        return _job_out(registry, job_id)

    @get("/api/jobs/{job_id}/progress", response_model=ProgressOut, tags=["jobs"])
    def job_progress(job_id: Name, actor: Actor = viewer) -> ProgressOut:
        job = registry.jobs.get(job_id)
        counts = registry.jobs.counts([job_id])[job_id]
        total = sum(n for s, n in counts.items() if s != "SKIPPED")
        finished = sum(n for s, n in counts.items() if s not in ("QUEUED", "IN_PROGRESS",
                                                                 "SKIPPED"))
        return ProgressOut(id=job_id, status=job.status, total=total, finished=finished,
                           percent=round(100.0 * finished / total, 1) if total else 100.0,
                           counts=counts)

    @post("/api/jobs/{job_id}/cancel", response_model=CancelOut, tags=["jobs"])
    def cancel(job_id: Name, body: Annotated[CancelIn | None, Body()] = None,
               actor: Actor = can[roles.CANCEL_JOB]) -> CancelOut:
        body = body or CancelIn()
        r = cancel_job(registry, job_id, actor, force=body.force, reason=body.reason)
        return CancelOut(**asdict(r))

    # -------------------------------------------------------------- shadows
    @app.get("/api/devices/{device_id}/shadow", responses=SHADOW_ERRORS, tags=["shadows"])
    async def get_shadow(device_id: Name, actor: Actor = viewer) -> dict[str, Any]:
        from fleet_tui.service.client import ShadowClient

        return await ShadowClient(settings).get(device_id)

    @app.patch("/api/devices/{device_id}/shadow/desired", responses=SHADOW_ERRORS,
               tags=["shadows"])
    async def update_desired(device_id: Name, body: DesiredIn,
                             actor: Actor = can[roles.EDIT_DESIRED]) -> dict[str, Any]:
        from fleet_tui.service.client import ShadowClient

        answer = await ShadowClient(settings).update_desired(device_id, body.desired,
                                                             version=body.version)
        registry.audit.record(actor.name, actor.role, "shadow.update", device_id,
                              {"desired": body.desired, "version": answer.get("version")})
        return answer

    # -------------------------------------------------------------- rollouts
    def _plan(body: RolloutIn) -> Any:
        gates = _gates(body.gates)
        js = _settings(body.job_settings or {"soak_s": gates.soak_s})
        return plan_rollout(registry, body.release, body.group, spec=WaveSpec.parse(body.waves),
                            gates=gates, job_settings=js)

    @post("/api/rollouts/plan", tags=["rollouts"])
    def rollout_plan(body: RolloutIn, actor: Actor = viewer) -> dict[str, Any]:
        return dict(_plan(body).to_dict())

    @post("/api/rollouts", status_code=201, tags=["rollouts"])
    def rollout_start(body: RolloutStartIn, actor: Actor = can[roles.START_ROLLOUT]
                      ) -> dict[str, Any]:
        row = start_rollout(registry, _plan(body), actor, confirm=body.confirm)
        return _rollout(registry, row.id)

    @get("/api/rollouts", tags=["rollouts"])
    def list_rollouts(actor: Actor = viewer, active: bool = False, limit: Limit = 50
                      ) -> list[dict[str, Any]]:
        return [_rollout(registry, r.id) for r in registry.rollouts.list_rollouts(
            active_only=active, limit=limit)]

    @get("/api/rollouts/{rollout_id}", tags=["rollouts"])
    def rollout_status(rollout_id: Name, actor: Actor = viewer) -> dict[str, Any]:
        return _rollout(registry, rollout_id)

    def _action(action: str) -> Callable[..., dict[str, Any]]:
        def handler(rollout_id: Name, body: Annotated[ActionIn | None, Body()] = None,
                    actor: Actor = can[ACTION_PERMISSION[action]]
                    ) -> dict[str, Any]:
            try:
                act(registry, rollout_id, action, actor, reason=(body or ActionIn()).reason)
            except RolloutError as err:
                raise ApiProblem(409, "rollout-state", str(err)) from None
            return _rollout(registry, rollout_id)

        handler.__name__ = f"rollout_{action}"
        return handler

    for action in ("approve", "halt", "resume", "cancel", "rollback"):
        app.post(f"/api/rollouts/{{rollout_id}}/{action}", responses=ERRORS,
                 tags=["rollouts"])(_action(action))

    # -------------------------------------------------------------- schedules
    @get("/api/schedules", tags=["schedules"])
    def list_schedules(actor: Actor = viewer) -> list[dict[str, Any]]:
        return [s.to_dict() for s in registry.automation.list_schedules()]

    @post("/api/schedules", status_code=201, tags=["schedules"])
    def create_schedule(body: ScheduleIn, actor: Actor = can[roles.CREATE_JOB]) -> dict[str, Any]:
        row = schedule_service.create_schedule(registry, body.kind, body.spec, actor,
                                               at=body.at, cron=body.cron, tz=body.timezone,
                                               schedule_id=body.id)
        return row.to_dict()

    @get("/api/schedules/{schedule_id}", tags=["schedules"])
    def get_schedule(schedule_id: Name, actor: Actor = viewer) -> dict[str, Any]:
        return registry.automation.get_schedule(schedule_id).to_dict()

    @app.delete("/api/schedules/{schedule_id}", status_code=204, responses=ERRORS,
                tags=["schedules"])
    def delete_schedule(schedule_id: Name, actor: Actor = can[roles.CREATE_JOB]) -> None:
        schedule_service.delete_schedule(registry, schedule_id, actor)

    # -------------------------------------------------------------- policies
    @get("/api/policies", tags=["policies"])
    def list_policies(actor: Actor = viewer) -> list[dict[str, Any]]:
        return [p.to_dict() for p in policy_service.list_policies(registry)]

    @post("/api/policies", status_code=201, tags=["policies"])
    def create_policy(body: PolicyIn, actor: Actor = can[roles.CREATE_JOB]) -> dict[str, Any]:
        return policy_service.create_policy(registry, body.definition, actor,
                                            enabled=body.enabled,
                                            dry_run=body.dry_run).to_dict()

    @app.patch("/api/policies/{name}", responses=ERRORS, tags=["policies"])
    def update_policy(name: Name, body: PolicyPatch,
                      actor: Actor = can[roles.CREATE_JOB]) -> dict[str, Any]:
        return policy_service.set_policy(registry, name, actor, enabled=body.enabled,
                                         dry_run=body.dry_run).to_dict()

    # -------------------------------------------------------------- alerts
    @get("/api/alerts", tags=["alerts"])
    def list_alerts(actor: Actor = viewer,
                    status: Literal["open", "resolved"] | None = None,
                    group: Annotated[str | None, Query(max_length=128)] = None,
                    kind: Annotated[str | None, Query(max_length=32)] = None,
                    limit: Limit = 100) -> list[dict[str, Any]]:
        return [a.to_dict() for a in alert_service.list_alerts(
            registry, status=status, group=group, kind=kind, limit=limit)]

    @get("/api/alerts/counts", tags=["alerts"])
    def alert_counts(actor: Actor = viewer) -> dict[str, Any]:
        return {"recent_alerts": alert_service.recent_alert_counts(
                    registry, window_s=settings.automation.recent_alerts_s),
                "open_by_severity": alert_service.open_alert_summary(registry)}

    @post("/api/alerts/{alert_id}/resolve", tags=["alerts"])
    def resolve_alert(alert_id: Annotated[int, Path(ge=1, le=2**62)],
                      actor: Actor = can[roles.EDIT_GROUPS]) -> dict[str, Any]:
        return alert_service.resolve_alert(registry, alert_id, actor).to_dict()

    # -------------------------------------------------------------- audit
    @get("/api/audit", tags=["audit"])
    def audit(actor: Actor = viewer,
              action: Annotated[str | None, Query(max_length=64)] = None,
              who: Annotated[str | None, Query(alias="actor", max_length=128)] = None,
              target: Annotated[str | None, Query(max_length=256)] = None,
              after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
              limit: Limit = 100) -> list[dict[str, Any]]:
        return [asdict(e) for e in registry.audit.entries(
            action=action, actor=who, target=target, after_id=after_id, limit=limit,
            newest_first=True)]

    @app.get("/api/healthz", tags=["meta"])
    def healthz(request: Request) -> dict[str, str]:
        return {"status": "ok"}

    return app
