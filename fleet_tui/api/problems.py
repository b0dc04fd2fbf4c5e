"""RFC 9457 problem documents for every error the API returns (``application/problem+json``:
``type``, ``title``, ``status``, ``detail``, ``instance``), and the mapping from the
service layer's errors to HTTP statuses."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet_tui.domain.jobs import JobError
from fleet_tui.domain.policy import PolicyError
from fleet_tui.domain.query import QuerySyntaxError
from fleet_tui.domain.roles import RoleError
from fleet_tui.domain.rollout import RolloutError
from fleet_tui.domain.schedule import ScheduleError
from fleet_tui.registry.errors import Conflict, NotFound, RegistryError
from fleet_tui.service.client import ServiceError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://fleet-tui.invalid/problems/"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "column": {"type": "integer"},
    },
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": HTTPStatus(code).phrase,
                   "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}} for code in codes}


class ApiProblem(Exception):
    def __init__(self, status: int, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.extra = status, kind, detail, extra


def problem(request: Request, status: int, kind: str, detail: str, **extra: Any
            ) -> JSONResponse:
    body = {"type": TYPE_BASE + kind, "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail, "instance": request.url.path, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _classify(err: Exception) -> tuple[int, str, dict[str, Any]]:
    if isinstance(err, RoleError):
        return err.code, "forbidden", {}
    if isinstance(err, NotFound):
        return 404, "not-found", {}
    if isinstance(err, Conflict):
        return 409, "conflict", {}
    if isinstance(err, QuerySyntaxError):
        return 400, "bad-query", {"column": err.col}
    if isinstance(err, (RolloutError, JobError, ScheduleError, PolicyError, RegistryError)):
        return 400, "invalid", {}
    if isinstance(err, ServiceError):
        code = err.code if err.code in (400, 404, 409, 413, 429) else 502
        return code, "shadow-service", {}
    return 500, "internal", {}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api(request: Request, err: ApiProblem) -> JSONResponse:
        return problem(request, err.status, err.kind, err.detail, **err.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                  for e in err.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return problem(request, 422, "validation",
                       f"{'.'.join(first['loc'])}: {first['msg']}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return problem(request, err.status_code, "http", str(err.detail))

    for kind in (RegistryError, JobError, RolloutError, ScheduleError, PolicyError,
                 QuerySyntaxError, ServiceError, RoleError):
        app.add_exception_handler(kind, _domain)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("API %s %s failed", request.method, request.url.path)
        return problem(request, 500, "internal", "internal error (see the API's log)")


async def _domain(request: Request, err: Exception) -> JSONResponse:
    status, kind, extra = _classify(err)
    return problem(request, status, kind, str(err), **extra)
