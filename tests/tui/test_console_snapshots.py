"""Snapshots of every view in each meaningful state at 80x24 and 120x40: fixed clock, fixed
title, seeded data, animations off, no service. Update with
``pytest tests/tui --snapshot-update`` (unused snapshots fail the run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from fleet_tui.registry.registry import Registry
from fleet_tui.tui.app import FleetApp
from fleet_tui.tui.screens.device import DeviceScreen
from tests.tui.conftest import (
    CONVERGING_DEVICE,
    IN_SYNC_DEVICE,
    OLD_FIRMWARE_DEVICE,
    AppFactory,
)
from tests.tui.workers import settled

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
SnapCompare = Callable[..., bool]
Step = Callable[[Pilot[Any]], Awaitable[None] | None]


class NeverCalledWriter:
    """The snapshots never send; a send would fail the test."""

    def update_desired(self, *args: object) -> dict[str, Any]:
        raise AssertionError("a snapshot tried to send desired state")


def then(*steps: Step) -> Callable[..., Any]:
    """A run_before that settles the workers around each step."""

    async def run(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        for step in steps:
            result = step(pilot)
            if result is not None:
                await result
            await settled(pilot)

    return run


def app_of(pilot: Pilot[Any]) -> FleetApp:
    assert isinstance(pilot.app, FleetApp)
    return pilot.app


def open_device(device: str) -> Step:
    def step(pilot: Pilot[Any]) -> None:
        app_of(pilot).open_device(device)

    return step


def keys(*pressed: str) -> Step:
    async def step(pilot: Pilot[Any]) -> None:
        await pilot.press(*pressed)

    return step


async def bad_filter(pilot: Pilot[Any]) -> None:
    await pilot.press("tab", "slash")
    pilot.app.query_one("#filter-input", Input).value = "firmware_version xx"
    await pilot.press("enter")


async def good_filter(pilot: Pilot[Any]) -> None:
    await pilot.press("tab", "slash")
    pilot.app.query_one("#filter-input", Input).value = 'hardware_rev = "rev-a"'
    await pilot.press("enter")


def converge(pilot: Pilot[Any]) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, DeviceScreen)
    screen.refresh_shadow({"previous": {}, "timestamp": 1_700_000_060, "current": {
        "state": {"desired": {"led_is_on": True, "telemetry_interval_s": 30},
                  "reported": {"led_is_on": True, "telemetry_interval_s": 30,
                               "firmware_version": "2.1.2", "ota_status": "idle"}},
        "version": 8}})


async def type_query(pilot: Pilot[Any], query: str) -> None:
    await pilot.press("n", *"eu-rev-a", "enter")
    pilot.app.screen.query_one("#group-query", Input).value = query
    await pilot.pause(0.3)


def select_group(name: str | None) -> Step:
    def step(pilot: Pilot[Any]) -> None:
        app_of(pilot).show_group(name)

    return step


def show_view(name: str) -> Step:
    def step(pilot: Pilot[Any]) -> None:
        app_of(pilot).show_view(name)

    return step


STATES: dict[str, tuple[dict[str, Any], tuple[Step, ...]]] = {
    "main_loaded": ({}, ()),
    "main_group_selected": ({}, (select_group("ams-1"),)),
    "main_filtered": ({}, (good_filter,)),
    "main_filter_error": ({}, (bad_filter,)),
    "main_read_only": ({"read_only": True}, (keys("tab"),)),
    "main_selection": ({}, (keys("tab", "space", "down", "space"),)),
    "device_converging": ({}, (open_device(CONVERGING_DEVICE),)),
    "device_in_sync": ({}, (open_device(IN_SYNC_DEVICE),)),
    "device_just_converged_flashing": ({}, (open_device(CONVERGING_DEVICE), converge)),
    "device_history": ({}, (open_device(CONVERGING_DEVICE), converge,
                            keys("left_square_bracket"))),
    "device_named_shadow": ({}, (open_device(CONVERGING_DEVICE), keys("n"))),
    "device_read_only": ({"read_only": True}, (open_device(CONVERGING_DEVICE),)),
    "edit_preview_capability_warning": ({}, (open_device(OLD_FIRMWARE_DEVICE),
                                            keys("e", *"telemetry_interval_s=20"))),
    "edit_confirm": ({}, (open_device(CONVERGING_DEVICE),
                          keys("e", *"led_is_on=false", "enter"))),
    "edit_error": ({}, (open_device(CONVERGING_DEVICE), keys("e", *"led_is_on=true oops"))),
    "group_editor_count": ({}, (lambda p: type_query(p, 'tag.region ~ "eu-*"'),)),
    "group_editor_error": ({}, (lambda p: type_query(p, "hardware_rev = "),)),
    "health_loaded": ({}, (show_view("health"),)),
    "health_day_other_metric": ({}, (show_view("health"), keys("h", "m"))),
    "help_device_table": ({}, (keys("tab", "question_mark"),)),
    "jump": ({}, (keys("colon", "h"),)),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("state", list(STATES))
def test_console(snap_compare: SnapCompare, make_app: AppFactory, state: str,
                 size: tuple[int, int]) -> None:
    options, steps = STATES[state]
    app = make_app(writer=NeverCalledWriter(), **options)
    assert snap_compare(app, terminal_size=size, run_before=then(*steps))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("view", ["main", "health", "device"])
def test_console_empty_registry(snap_compare: SnapCompare, make_app: AppFactory,
                                empty_registry: Registry, view: str,
                                size: tuple[int, int]) -> None:
    steps: tuple[Step, ...] = {"main": (), "health": (show_view("health"),),
                               "device": (open_device("esp32-000001"),)}[view]
    assert snap_compare(make_app(on=empty_registry), terminal_size=size,
                        run_before=then(*steps))
