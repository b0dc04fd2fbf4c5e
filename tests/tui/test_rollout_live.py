"""The bad-canary drill by keyboard against the real thing: a mosquitto started by the test,
the real FleetService with its job and rollout engine, simulated devices that download
the real images over HTTP and crash-loop on rev-b with 2.4.0, and the console.

The operator plans 2.4.0 in the wizard and starts it by typing the version; the canary
halts by itself with the evidence; R rolls it back; then 2.4.1 goes through every wave
with a halt, a resume and the approvals, all by keys. A read-only monitor on the same
rollout refuses every key. The registry is SQLite, then PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from fleet_tui.registry.rollouts_store import RolloutRow
from fleet_tui.tui.app import FleetApp
from fleet_tui.tui.screens.rollout_wizard import RolloutWizardScreen
from fleet_tui.tui.screens.rollouts import RolloutMonitorScreen
from tests.integration.conftest import mosquitto  # noqa: F401 (the fixture)
from tests.integration.engine_rig import EngineRig, engine_rig, firmware_server
from tests.integration.mosquitto import Mosquitto
from tests.tui.test_console_flows import settle, static_text

pytestmark = pytest.mark.slow


@pytest.fixture
def base_url() -> Iterator[str]:
    with firmware_server() as url:
        yield url


async def press(pilot: Pilot[None], *keys: str) -> None:
    await pilot.press(*keys)
    await settle(pilot)


async def plan_and_start(app: FleetApp, pilot: Pilot[None], release_keys: tuple[str, ...],
                         version: str, group: str = "plant") -> RolloutRow:
    """The wizard, by keys: release, group, waves 10,50,100, 1 s soak, no rate limit,
    then the flight plan and the typed confirmation."""
    await press(pilot, "colon", *"rollouts", "enter", "n")
    assert isinstance(app.screen, RolloutWizardScreen)
    await press(pilot, *release_keys, "enter")
    assert app.screen.release == version
    await press(pilot, *group, "enter")
    await press(pilot, *"10,50,100", "enter", "enter", "enter", "1", "enter", "enter",
                "enter")
    await press(pilot, "backspace", "enter", "enter", *"60", "enter")
    assert "dry run" in static_text(app, "#plan-view")
    await press(pilot, "s", *version, "enter")
    await settle(pilot)
    assert isinstance(app.screen, RolloutMonitorScreen)
    return app.registry.rollouts.get(app.screen.rollout_id)


async def until_status(rig: EngineRig, pilot: Pilot[None], rollout_id: str, status: str,
                       timeout: float) -> RolloutRow:
    try:
        row = await rig.until(lambda: (r := rig.registry.rollouts.get(rollout_id)).status
                              == status and r, timeout, f"the rollout to be {status}")
    except AssertionError:
        r = rig.registry.rollouts.get(rollout_id)
        counts = rig.registry.jobs.counts([w.job_id for w in r.waves if w.job_id])
        assert rig.service is not None
        telemetry = rig.service.telemetry
        stuck = {e.device_id: (e.status, e.status_details, rig.reported(e.device_id),
                               telemetry.latest.get(e.device_id),
                               rig.service.presence.online.get(e.device_id))
                 for w in r.waves if w.job_id
                 for e in rig.registry.jobs.executions(w.job_id)
                 if e.status not in ("SUCCEEDED", "QUEUED")}
        raise AssertionError(f"{rollout_id} is {r.status} ({r.reason}), wave "
                             f"{r.current_wave}: {counts}; {stuck}") from None
    await settle(pilot)
    screen = pilot.app.screen
    if isinstance(screen, RolloutMonitorScreen):
        screen.reload()
        await settle(pilot)
    assert isinstance(row, RolloutRow)
    return row


async def test_bad_canary_drill_by_keyboard(mosquitto: Mosquitto,  # noqa: F811
                                           tmp_path: Path, base_url: str, db_url: str) -> None:
    async with engine_rig(mosquitto, db_url, tmp_path, base_url) as rig:
        await rig.start_service()
        await rig.start_fleet()
        revs = {r["id"]: r["hardware_rev"] for r in rig.rows}
        app = FleetApp(rig.settings, rig.registry)
        app.animation_level = "none"
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            # 1. 2.4.0 (the second release, newest first): the canary halts by itself.
            bad = await plan_and_start(app, pilot, ("down",), "2.4.0")
            canary = bad.waves[0].device_ids
            assert {revs[d] for d in canary} == {"rev-a", "rev-b", "rev-c"}
            halted = await until_status(rig, pilot, bad.id, "HALTED", 90)
            assert "error gate" in halted.reason and "canary" in halted.reason
            assert "error gate" in static_text(app, "#rollout-reason")
            evidence = static_text(app, "#rollout-evidence")
            assert "failed on" in evidence and "rev-b" in evidence
            assert halted.waves[1].job_id is None  # nothing beyond the canary
            assert "rollout.halt" in static_text(app, "#rollout-audit")

            # 2. R (confirmed): the updated canary devices go back to 2.2.0.
            await rig.until(lambda: any(rig.reported(d).get("firmware_version") == "2.4.0"
                                        for d in canary), 30, "a canary device on 2.4.0")
            await press(pilot, "R", "y")
            await until_status(rig, pilot, bad.id, "ROLLED_BACK", 90)
            assert all(rig.reported(d)["firmware_version"] == "2.2.0" for d in canary)
            assert "alice" in static_text(app, "#rollout-audit")

            # 3. 2.4.1 through every wave: halt and resume on the way, approvals by keys.
            await press(pilot, "escape", "escape")
            good = await plan_and_start(app, pilot, (), "2.4.1")
            await until_status(rig, pilot, good.id, "WAITING_APPROVAL", 90)
            monitor = app.screen
            # A read-only console on the same rollout refuses every key.
            app.push_screen(RolloutMonitorScreen(rig.registry, good.id, app.actor,
                                                 read_only=True))
            await settle(pilot)
            for key in ("a", "h", "r", "c", "R"):
                await press(pilot, key)
                assert "read-only" in static_text(app, "#rollout-status")
            assert rig.registry.rollouts.get(good.id).status == "WAITING_APPROVAL"
            await press(pilot, "escape")
            assert app.screen is monitor
            await press(pilot, "h")
            assert rig.registry.rollouts.get(good.id).status == "HALTED"
            await press(pilot, "r")
            assert rig.registry.rollouts.get(good.id).status == "WAITING_APPROVAL"
            for _ in range(len(good.waves) - 1):
                await press(pilot, "a")
                if rig.registry.rollouts.get(good.id).current_wave == len(good.waves) - 1:
                    break
                await until_status(rig, pilot, good.id, "WAITING_APPROVAL", 90)
            done = await until_status(rig, pilot, good.id, "COMPLETED", 120)
            assert all(w.status == "PASSED" for w in done.waves)
            assert all(rig.reported(r["id"])["firmware_version"] == "2.4.1" for r in rig.rows)
            actions = [e.action for e in rig.registry.audit.entries(target=good.id)
                       if e.actor == "alice"]
            assert [a for a in actions if a != "rollout.wave.start"] == [
                "rollout.start", "rollout.halt", "rollout.resume", "rollout.approve",
                "rollout.approve"]
            assert rig.registry.audit.verify().ok
