"""schemathesis against the generated OpenAPI spec, over real HTTP: a uvicorn this module
starts on a free port, a real registry with a fleet (SQLite, then PostgreSQL), the real
service through a real mosquitto. Every operation, valid and invalid inputs: never a 500,
every status code and content type documented, every body matching its schema. Bounded
examples (< 60 s a backend)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import Registry
from tests.integration.api_rig import APPROVER, ApiServer, api_server, api_settings
from tests.integration.engine_rig import fleet_rows, write_fleet_dir
from tests.integration.mosquitto import Mosquitto

# The last test reads what the generated calls left in the audit log: keep the module on
# one xdist worker, in order (`make test` runs `--dist loadgroup`); pytest runs a module's
# tests backend by backend, so each backend's audit check follows its own calls.
pytestmark = pytest.mark.xdist_group("schemathesis")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_db_url: str
           ) -> Iterator[ApiServer]:
    """One API server per backend (SQLite, then PostgreSQL) for the whole module."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    broker = Mosquitto().start()
    url = module_db_url
    registry = Registry.open(url)
    import_fleet(registry, write_fleet_dir(tmp / "fleet", fleet_rows(12)))
    try:
        with api_server(registry, api_settings(url, broker.url)) as api:
            yield api
    finally:
        registry.close()
        broker.close()


@pytest.fixture(scope="module")
def api_schema(server: ApiServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_spec(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=APPROVER, checks=CHECKS)


def test_spec_lists_the_guides_endpoints(api_schema: schemathesis.BaseSchema,
                                         server: ApiServer) -> None:
    import httpx

    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path, method in [("/api/groups", "post"), ("/api/groups/{group_id}", "get"),
                         ("/api/groups/{group_id}/devices", "get"),
                         ("/api/groups/{group_id}/health", "get"), ("/api/jobs", "post"),
                         ("/api/jobs/{job_id}", "get"), ("/api/jobs/{job_id}/progress", "get"),
                         ("/api/jobs/{job_id}/cancel", "post")]:
        assert method in paths[path], (path, method)
    error = paths["/api/jobs"]["post"]["responses"]["400"]
    assert "application/problem+json" in error["content"]



def test_the_generated_calls_were_authorized_and_audited(server: ApiServer) -> None:
    """schemathesis ran as the approver: some of its valid mutations went through."""
    entries = server.registry.audit.entries(actor="anna", limit=1000)
    assert entries and all(e.role == "approver" for e in entries)
