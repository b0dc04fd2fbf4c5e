"""The engine re-drives firmware executions whose desired OTA write a killed worker lost:
the execution is durable before its desired write, so the next engine finds it
IN_PROGRESS with nothing in the device's shadow and writes the desired state again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest

from fleet_tui.domain.jobs import SUCCEEDED, JobSettings
from fleet_tui.domain.shadow import ShadowDocument
from fleet_tui.service.job_control import Actor, Target, create_job, plan_job
from fleet_tui.service.shadows import Entry
from tests.integration.engine_rig import EngineRig, engine_rig, firmware_server
from tests.integration.mosquitto import Mosquitto

pytestmark = pytest.mark.slow
OPS = Actor("olga", "operator")


@pytest.fixture
def base_url() -> Iterator[str]:
    with firmware_server() as url:
        yield url


def _released_by_a_dying_engine(rig: EngineRig, ids: list[str]) -> str:
    """A firmware job whose executions the dying engine's tick committed IN_PROGRESS."""
    plan = plan_job(rig.registry, "firmware_update", {"release": "2.4.1"},
                    Target(device_ids=tuple(ids)), JobSettings(timeout_s=600, soak_s=0.5))
    create_job(rig.registry, plan, OPS)
    with rig.registry.locked() as conn:
        released = rig.registry.jobs.release(conn, plan.job_id, 10, time.time(), start=True)
    assert sorted(e.device_id for e in released) == ids
    return plan.job_id


async def _until_updated(rig: EngineRig, job_id: str, ids: list[str]) -> None:
    await rig.until(lambda: rig.registry.jobs.counts([job_id])[job_id].get(SUCCEEDED)
                    == len(ids), 60, "the re-driven executions to succeed")
    for thing in ids:
        assert rig.reported(thing)["firmware_version"] == "2.4.1"
        assert rig.desired(thing)["target_version"] == "2.4.1"


async def test_execution_whose_desired_write_died_with_the_engine_is_driven_again(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        rig.settings.jobs.redrive_s = 1.0
        ids = ["dev-000", "dev-001"]
        await rig.start_fleet(ids, shadow_retry_s=2.0)
        # Killed before its desired OTA writes reached any shadow: the next engine takes
        # over and finds no desired target there.
        job_id = _released_by_a_dying_engine(rig, ids)
        await rig.start_service()
        await _until_updated(rig, job_id, ids)


async def test_online_device_that_never_got_its_delta_is_driven_again(
        mosquitto: Mosquitto, tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        rig.settings.jobs.redrive_s = 1.0
        ids = ["dev-002"]
        await rig.start_fleet(ids, shadow_retry_s=2.0)  # its get at connect: unanswered
        job_id = _released_by_a_dying_engine(rig, ids)
        # The desired write was stored, but its owner died before it published the delta.
        release = rig.registry.get_release("2.4.1")
        ota = {"target_version": "2.4.1", "ota_url": urljoin(base_url, release.url),
               "ota_sha256": release.sha256}
        doc = ShadowDocument.empty().apply_update({"state": {"desired": ota}},
                                                  int(time.time())).document
        rig.registry.save_shadows([(ids[0], "", doc.version, Entry(doc, True).stored())])
        await rig.start_service()
        await _until_updated(rig, job_id, ids)
