"""The console follows the operator's role: a viewer gets the read-only console even
without --read-only; an operator keeps the edit binding."""

from __future__ import annotations

import pytest

from fleet_tui.config import Settings
from fleet_tui.registry.registry import Registry
from fleet_tui.tui.app import FleetApp
from tests.tui.conftest import IN_SYNC_DEVICE, fixed_clock
from tests.tui.test_console_flows import settle


@pytest.fixture
def registry(seeded_registry: Registry) -> Registry:
    """The seeded console registry, on SQLite and on PostgreSQL."""
    return seeded_registry


@pytest.mark.parametrize(("role", "can_edit"), [("viewer", False), ("operator", True)])
async def test_role_decides_whether_desired_can_be_edited(registry: Registry, role: str,
                                                          can_edit: bool) -> None:
    app = FleetApp(Settings(db="sqlite://", role=role), registry, clock=fixed_clock)
    app.animation_level = "none"
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.open_device(IN_SYNC_DEVICE)
        await settle(pilot)
        actions = {b.binding.action for b in app.screen.active_bindings.values()}
        assert ("edit_desired" in actions) is can_edit
        assert ("read-only" in app.sub_title) is not can_edit
