"""Cron schedules and maintenance windows across time zones and DST (zoneinfo)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_tui.domain.schedule import MaintenanceWindow, ScheduleError, next_cron, next_run

BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz: ZoneInfo = BERLIN) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def local(t: float, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromtimestamp(t, tz)


def test_nightly_cron_keeps_local_time_across_dst() -> None:
    # 03:00 local every night: 02:00 UTC in winter, 01:00 UTC from 29 March on.
    t = ts(2026, 3, 27, 12, 0)
    runs = []
    for _ in range(4):
        t = next_cron("0 3 * * *", "Europe/Berlin", t)
        runs.append(local(t))
    assert [r.hour for r in runs] == [3, 3, 3, 3]
    assert [r.utcoffset() for r in runs] == [timedelta(hours=1), timedelta(hours=2),
                                             timedelta(hours=2), timedelta(hours=2)]


def test_cron_time_inside_the_spring_gap_runs_right_after_it() -> None:
    # 29 Mar 2026: Berlin jumps 02:00 -> 03:00; 02:30 does not exist that night.
    run = local(next_cron("30 2 * * *", "Europe/Berlin", ts(2026, 3, 28, 12, 0)))
    assert (run.day, run.hour, run.minute) == (29, 3, 0)
    then = local(next_cron("30 2 * * *", "Europe/Berlin", run.timestamp()))
    assert (then.day, then.hour, then.minute) == (30, 2, 30)


def test_cron_time_in_the_repeated_autumn_hour_runs_once() -> None:
    # 25 Oct 2026: 02:00-03:00 happens twice in Berlin.
    first = next_cron("30 2 * * *", "Europe/Berlin", ts(2026, 10, 24, 12, 0))
    second = next_cron("30 2 * * *", "Europe/Berlin", first)
    assert local(first).day == 25 and local(second).day == 26


def test_one_shot_schedule_runs_once_recurring_moves_on() -> None:
    assert next_run(at=100.0, cron=None, tz="UTC", after=50.0, ran=False) == 100.0
    assert next_run(at=100.0, cron=None, tz="UTC", after=150.0, ran=True) is None
    start = ts(2026, 1, 5, 0, 0, tz=ZoneInfo("UTC"))
    # A cron schedule with a start time does not run before it.
    first = next_run(at=start, cron="0 * * * *", tz="UTC", after=start - 86400, ran=False)
    assert first == start


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "0 0 31 2 mon-", "bogus"])
def test_bad_cron_is_refused_with_the_expression(expr: str) -> None:
    with pytest.raises(ScheduleError, match="cron"):
        next_cron(expr, "UTC", 0.0)


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        next_cron("0 2 * * *", "Mars/Olympus", 0.0)


def test_weekday_window_in_berlin() -> None:
    w = MaintenanceWindow.parse("Mon-Fri 01:00-04:00 Europe/Berlin")
    assert w.is_open(ts(2026, 12, 2, 1, 0))  # Wednesday 01:00
    assert w.is_open(ts(2026, 12, 2, 3, 59))
    assert not w.is_open(ts(2026, 12, 2, 4, 0))
    assert not w.is_open(ts(2026, 12, 5, 2, 0))  # Saturday
    # 00:30 UTC is 01:30 in Berlin in winter: open; in UTC terms the window moved.
    assert w.is_open(ts(2026, 12, 2, 0, 30, tz=ZoneInfo("UTC")))
    assert not w.is_open(ts(2026, 12, 2, 3, 30, tz=ZoneInfo("UTC")))


def test_window_over_midnight_belongs_to_the_evening_it_starts() -> None:
    w = MaintenanceWindow.parse("Sat 22:00-02:00 UTC")
    utc = ZoneInfo("UTC")
    assert w.is_open(ts(2026, 12, 5, 23, 0, tz=utc))  # Saturday night
    assert w.is_open(ts(2026, 12, 6, 1, 0, tz=utc))  # Sunday early morning
    assert not w.is_open(ts(2026, 12, 6, 23, 0, tz=utc))  # Sunday night
    assert not w.is_open(ts(2026, 12, 5, 1, 0, tz=utc))  # Saturday early morning


def test_window_on_dst_days_follows_the_wall_clock() -> None:
    w = MaintenanceWindow.parse("Sun 01:00-04:00 Europe/Berlin")
    # Spring: 02:00-03:00 does not exist; the window is two real hours long.
    assert w.is_open(ts(2026, 3, 29, 1, 30))
    assert w.is_open(ts(2026, 3, 29, 3, 30))
    assert not w.is_open(ts(2026, 3, 29, 4, 0))
    # Autumn: the repeated hour is inside too (four real hours).
    start = ts(2026, 10, 25, 1, 0)
    assert all(w.is_open(start + h * 3600) for h in range(4))
    assert not w.is_open(start + 4 * 3600)


def test_next_open_is_the_next_start() -> None:
    w = MaintenanceWindow.parse("Mon-Fri 01:00-04:00 Europe/Berlin")
    nxt = local(w.next_open(ts(2026, 12, 4, 12, 0)) or 0)  # Friday noon
    assert (nxt.weekday(), nxt.hour, nxt.minute) == (0, 1, 0)  # Monday 01:00
    inside = ts(2026, 12, 2, 2, 0)
    assert w.next_open(inside) == inside


@pytest.mark.parametrize("text", ["", "Mon-Fri", "Funday 01:00-02:00", "Mon 25:00-26:00",
                                  "Mon 01:00-01:00", "Mon 01:00-02:00 Nowhere/City"])
def test_bad_window_is_refused(text: str) -> None:
    with pytest.raises(ScheduleError, match=r"window|zone"):
        MaintenanceWindow.parse(text)


@given(st.floats(min_value=1.7e9, max_value=1.9e9))
def test_window_next_open_is_open_and_not_before(t: float) -> None:
    w = MaintenanceWindow.parse("Tue,Thu 23:30-00:30 America/New_York")
    nxt = w.next_open(t)
    assert nxt is not None and nxt >= t
    assert w.is_open(nxt + 1)
