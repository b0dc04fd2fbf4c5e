"""The rollout, jobs and audit views driven by keys on a real SQLite registry (rollouts
seeded by the real service and engine): the wizard starts a rollout only after the release
version is typed; the monitor's keys approve, halt, resume, cancel and roll back, each
landing in the audit log at once; read-only mode refuses every one of them."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from fleet_tui.registry.audit import AUDIT
from fleet_tui.registry.registry import Registry
from fleet_tui.tui.app import FleetApp
from fleet_tui.tui.screens.audit import AuditScreen, parse_filter
from fleet_tui.tui.screens.confirm import TypeToConfirmScreen, YesNoScreen
from fleet_tui.tui.screens.jobs import CancelJobScreen, JobCreateScreen, JobsScreen
from fleet_tui.tui.screens.rollout_wizard import RolloutWizardScreen, parse_metrics
from fleet_tui.tui.screens.rollouts import RolloutMonitorScreen, RolloutsScreen
from tests.tui.conftest import AppFactory
from tests.tui.rollout_seed import seed
from tests.tui.test_console_flows import settle, static_text


async def open_monitor(app: FleetApp, pilot, rollout: str) -> RolloutMonitorScreen:  # type: ignore[no-untyped-def]
    app.push_screen(RolloutMonitorScreen(app.registry, rollout, app.actor, clock=app.clock,
                                         read_only=app.read_only))
    await settle(pilot)
    assert isinstance(app.screen, RolloutMonitorScreen)
    return app.screen


async def press(pilot, *keys: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press(*keys)
    await settle(pilot)


async def test_wizard_plans_and_starts_only_with_the_typed_release_version(
        make_app: AppFactory, registry: Registry) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "colon", *"rollouts", "enter")
        assert isinstance(app.screen, RolloutsScreen)
        await press(pilot, "n")
        assert isinstance(app.screen, RolloutWizardScreen)
        await press(pilot, "down", "down", "enter")  # 2.3.0: newest first
        assert app.screen.release == "2.3.0"
        await press(pilot, *"no-such-group", "enter")
        assert "no such group" in static_text(app, "#wizard-error")
        app.screen.query_one("#group-input", Input).value = ""
        await press(pilot, *"bos-1-l3", "enter", *["enter"] * 6, *["enter"] * 3)
        plan = static_text(app, "#plan-view")
        assert "dry run" in plan and "1 canary" in plan and "skipped: 19 devices" in plan
        assert "does not support hardware rev-a" in plan
        assert registry.rollouts.list_rollouts() == []  # nothing recorded by planning
        await press(pilot, "s", *"2.3", "enter")
        assert isinstance(app.screen, TypeToConfirmScreen)
        assert "nothing was started" in static_text(app, "#confirm-error")
        assert registry.rollouts.list_rollouts() == []
        app.screen.query_one(Input).value = ""
        await press(pilot, *"2.3.0", "enter")
        await settle(pilot)
        assert isinstance(app.screen, RolloutMonitorScreen)
        (rollout,) = registry.rollouts.list_rollouts()
        assert rollout.status == "RUNNING" and rollout.release_version == "2.3.0"
        assert rollout.created_by == app.settings.operator
        assert "rollout.start" in static_text(app, "#rollout-audit")


async def test_enter_on_the_rollouts_list_opens_the_monitor(
        make_app: AppFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout = seed(registry, "halted", monkeypatch)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "colon", *"rollouts", "enter", "enter")
        assert isinstance(app.screen, RolloutMonitorScreen)
        assert app.screen.rollout_id == rollout
        await press(pilot, "escape")
        assert isinstance(app.screen, RolloutsScreen)


async def test_monitor_keys_approve_halt_resume_cancel_and_audit_at_once(
        make_app: AppFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout = seed(registry, "waiting_approval", monkeypatch)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await open_monitor(app, pilot, rollout)
        operator = app.settings.operator
        await press(pilot, "a")
        row = registry.rollouts.get(rollout)
        assert row.status == "RUNNING" and row.current_wave == 1
        assert f"{operator}" in static_text(app, "#rollout-audit")
        assert "rollout.approve" in static_text(app, "#rollout-audit")
        await press(pilot, "h")
        assert registry.rollouts.get(rollout).status == "HALTED"
        assert "halted" in static_text(app, "#rollout-reason")
        await press(pilot, "r")
        assert registry.rollouts.get(rollout).status == "RUNNING"
        await press(pilot, "a")  # not waiting for an approval: refused, with the reason
        assert "approve refused" in static_text(app, "#rollout-status")
        await press(pilot, "c")
        assert isinstance(app.screen, YesNoScreen)
        await press(pilot, "n")
        assert registry.rollouts.get(rollout).status == "RUNNING"
        await press(pilot, "c", "y")
        assert registry.rollouts.get(rollout).status == "CANCELED"
        actions = [e.action for e in registry.audit.entries(target=rollout)]
        assert actions[-4:] == ["rollout.approve", "rollout.halt", "rollout.resume",
                                "rollout.cancel"]
        assert {e.actor for e in registry.audit.entries(target=rollout)[-4:]} == {operator}


async def test_roll_back_asks_first_then_sets_the_previous_release(
        make_app: AppFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout = seed(registry, "halted", monkeypatch)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await open_monitor(app, pilot, rollout)
        assert "error gate" in static_text(app, "#rollout-reason")
        assert screen.rollout is not None and screen.rollout.status == "HALTED"
        await press(pilot, "R")
        assert isinstance(app.screen, YesNoScreen)
        await press(pilot, "escape")
        assert registry.rollouts.get(rollout).status == "HALTED"
        await press(pilot, "R", "y")
        row = registry.rollouts.get(rollout)
        assert row.status == "ROLLING_BACK" and "rolling back 3 devices" in row.reason
        job = registry.jobs.get(f"{rollout}-rollback")
        assert job.document == {"operation": "firmware_update", "release": "2.4.0"}


async def test_read_only_refuses_every_rollout_and_job_action(
        make_app: AppFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout = seed(registry, "waiting_approval", monkeypatch)
    before = len(registry.audit.entries())
    app = make_app(read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_monitor(app, pilot, rollout)
        for key, action in (("a", "approve"), ("h", "halt"), ("r", "resume"),
                            ("c", "cancel"), ("R", "rollback")):
            await press(pilot, key)
            assert isinstance(app.screen, RolloutMonitorScreen)  # no confirmation even
            assert f"read-only: {action} refused" in static_text(app, "#rollout-status")
        await press(pilot, "escape", "colon", *"rollouts", "enter", "n")
        assert isinstance(app.screen, RolloutsScreen)
        assert "read-only" in static_text(app, "#rollout-status")
        await press(pilot, "colon", *"jobs", "enter", "n")
        assert isinstance(app.screen, JobsScreen)
        assert "read-only: new job refused" in static_text(app, "#jobs-status")
        await press(pilot, "c")
        assert "read-only: cancel refused" in static_text(app, "#jobs-status")
    assert registry.rollouts.get(rollout).status == "WAITING_APPROVAL"
    assert len(registry.audit.entries()) == before


async def test_job_from_a_group_with_preview_then_cancel_with_force_explained(
        make_app: AppFactory, registry: Registry) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.show_group("bos-1-l3")
        await settle(pilot)
        await press(pilot, "colon", *"jobs", "enter", "n")
        assert isinstance(app.screen, JobCreateScreen)
        assert app.screen.query_one("#job-group", Input).value == "bos-1-l3"
        await press(pilot, "ctrl+s")
        assert "previews the job first" in static_text(app, "#job-error")
        await press(pilot, "enter", *"firmware_update", "enter", *"release 2.3.0",
                    *["enter"] * 6)
        preview = static_text(app, "#job-preview")
        assert "39 devices take it, 19 skipped" in preview
        assert "does not support hardware rev-a" in preview
        await press(pilot, "ctrl+s")
        assert isinstance(app.screen, JobsScreen)
        (job,) = registry.jobs.list_jobs()
        assert job.created_by == app.settings.operator
        await press(pilot, "c")
        assert isinstance(app.screen, CancelJobScreen)
        assert "force: in-progress executions are canceled too" in static_text(
            app, "#cancel-box Static:last-of-type")
        await press(pilot, "f")
        assert registry.jobs.get(job.id).status == "CANCELED"
        assert "39 queued executions canceled" in static_text(app, "#jobs-status")


async def test_audit_view_filters_and_marks_a_broken_chain(
        make_app: AppFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(registry, "rolled_back", monkeypatch)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "colon", *"audit", "enter")
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        assert "✓ audit chain intact: 8 entries" in static_text(app, "#audit-chain")
        await press(pilot, "slash", *"actor=engine", "enter")
        assert "2 entries" in screen.sub_title
        await press(pilot, "slash", *"bogus=1", "enter")
        assert "expected action|actor|target=VALUE" in static_text(app, "#audit-error")
        await press(pilot, "escape", "escape")  # close the box, then clear the filter
        assert "8 entries" in screen.sub_title
        with registry.engine.begin() as conn:
            conn.execute(AUDIT.update().where(AUDIT.c.id == 3).values(actor="mallory"))
        screen.reload()
        await settle(pilot)
        assert "✗ audit chain BROKEN at entry 3" in static_text(app, "#audit-chain")


def test_filter_and_metric_gate_syntax() -> None:
    assert parse_filter("rollout actor=alice") == {"action": "rollout*", "actor": "alice"}
    (gate,) = parse_metrics("heap_free>=0.8")
    assert gate.metric == "heap_free" and gate.min_ratio == 0.8 and gate.max_ratio is None
    with pytest.raises(ValueError, match="expected METRIC>=RATIO"):
        parse_metrics("heap_free=0.8")
