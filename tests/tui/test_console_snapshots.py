"""Snapshots of the console at 80x24 and 120x40: fixed clock, fixed title, seeded data,
animations off, no service. Update with ``pytest tests/tui --snapshot-update``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.tui.conftest import CONVERGING_DEVICE, AppFactory

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
SnapCompare = Callable[..., bool]


def then(*steps: Callable[[Pilot[Any]], Awaitable[None] | None]) -> Callable[..., Any]:
    """A run_before that settles the workers around each step."""

    async def run(pilot: Pilot[Any]) -> None:
        async def settle() -> None:
            for _ in range(4):
                await pilot.app.workers.wait_for_complete()
                await pilot.pause()

        await settle()
        for step in steps:
            result = step(pilot)
            if result is not None:
                await result
            await settle()

    return run


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: SnapCompare, make_app: AppFactory,
                     size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=then())


@pytest.mark.parametrize("size", SIZES)
def test_main_screen_group_expanded_and_selected(
    snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
) -> None:
    def select(pilot: Pilot[Any]) -> None:
        pilot.app.show_group("ams-1")  # type: ignore[attr-defined]

    assert snap_compare(make_app(), terminal_size=size, run_before=then(select))


def test_filter_error(snap_compare: SnapCompare, make_app: AppFactory) -> None:
    async def bad_filter(pilot: Pilot[Any]) -> None:
        await pilot.press("tab", "slash")
        pilot.app.query_one("#filter-input", Input).value = "firmware_version xx"
        await pilot.press("enter")

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=then(bad_filter))


@pytest.mark.parametrize("size", SIZES)
def test_device_view_converging(snap_compare: SnapCompare, make_app: AppFactory,
                                size: tuple[int, int]) -> None:
    def open_device(pilot: Pilot[Any]) -> None:
        pilot.app.open_device(CONVERGING_DEVICE)  # type: ignore[attr-defined]

    assert snap_compare(make_app(), terminal_size=size, run_before=then(open_device))


def test_device_view_read_only(snap_compare: SnapCompare, make_app: AppFactory) -> None:
    def open_device(pilot: Pilot[Any]) -> None:
        pilot.app.open_device(CONVERGING_DEVICE)  # type: ignore[attr-defined]

    assert snap_compare(make_app(read_only=True), terminal_size=(80, 24),
                        run_before=then(open_device))
