"""When scheduled work runs and when disruptive work may start: cron expressions in a time
zone, and per-group maintenance windows such as ``Mon-Fri 01:00-04:00 Europe/Berlin``.

Time zones and DST come from ``zoneinfo``; cron arithmetic from ``cronsim`` (a wall time
that does not exist on a spring-forward day runs at the first instant after the gap, an
ambiguous one on the fall-back day runs once). Everything takes the clock as an argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleError(ValueError):
    """A bad cron expression, time zone or window: the message says which part."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"time zone {name!r}: not an IANA zone such as "
                            "Europe/Berlin or UTC") from None


def check_cron(expr: str) -> None:
    try:
        CronSim(expr, datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")))
    except CronSimError as err:
        raise ScheduleError(f"cron {expr!r}: {err}") from None


def next_cron(expr: str, tz: str, after: float) -> float:
    """The first run of ``expr`` (in zone ``tz``) strictly after the instant ``after``."""
    check_cron(expr)
    start = datetime.fromtimestamp(after, zone(tz))
    return next(iter(CronSim(expr, start))).timestamp()


def next_run(*, at: float | None, cron: str | None, tz: str, after: float,
             ran: bool) -> float | None:
    """A one-shot schedule runs once at ``at``; a recurring one at its next cron time
    (from ``at`` on, when given). None: nothing left to run."""
    if cron is None:
        return None if ran or at is None else at
    base = after if at is None or after >= at else at - 1e-6
    return next_cron(cron, tz, base)


_WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
    r"(?:\s+(?P<tz>\S+))?\s*$")


def _clock(text: str, what: str) -> time:
    hh, mm = (int(p) for p in text.split(":"))
    if hh == 24 and mm == 0:
        return time.max
    if not (0 <= hh < 24 and 0 <= mm < 60):
        raise ScheduleError(f"window {what} {text!r}: expected HH:MM between 00:00 and 24:00")
    return time(hh, mm)


def _days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        ends = part.split("-")
        try:
            idx = [DAYS.index(e[:3]) for e in ends if e]
        except ValueError:
            raise ScheduleError(f"window days {text!r}: use Mon..Sun, ranges (Mon-Fri) and "
                                "lists (Sat,Sun)") from None
        if len(idx) == 1 and len(ends) == 1:
            out.add(idx[0])
        elif len(idx) == 2:
            a, b = idx
            out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        else:
            raise ScheduleError(f"window days {part!r}: expected a day or DAY-DAY")
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Days, a local start and end time and a zone. An end before the start crosses
    midnight (``Sat 22:00-02:00`` is open Saturday night into Sunday)."""

    days: frozenset[int]
    start: time
    end: time
    tz: str
    text: str

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        m = _WINDOW.match(text or "")
        if m is None:
            raise ScheduleError(f"window {text!r}: expected DAYS HH:MM-HH:MM [ZONE], e.g. "
                                "'Mon-Fri 01:00-04:00 Europe/Berlin'")
        days = _days(m["days"]) if m["days"].lower() not in ("daily", "all") else \
            frozenset(range(7))
        start, end = _clock(m["start"], "start"), _clock(m["end"], "end")
        if start == end:
            raise ScheduleError(f"window {text!r}: start and end are the same time")
        tz = m["tz"] or "UTC"
        zone(tz)
        return cls(days, start, end, tz, text.strip())

    def is_open(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, zone(self.tz))
        now = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= now < self.end
        # Crosses midnight: the evening of a listed day, or the morning after one.
        return (day in self.days and now >= self.start) or \
            ((day - 1) % 7 in self.days and now < self.end)

    def next_open(self, ts: float) -> float | None:
        """The next instant (>= ts) at which the window is open, to the minute."""
        if self.is_open(ts):
            return ts
        tz = zone(self.tz)
        local = datetime.fromtimestamp(ts, tz)
        for offset in range(8):
            day = (local + timedelta(days=offset)).date()
            if day.weekday() not in self.days:
                continue
            # A start inside a DST gap resolves to the first instant after it.
            candidate = datetime.combine(day, self.start, tz).timestamp()
            if candidate >= ts and self.is_open(candidate + 1):
                return candidate
        return None  # (a window that falls wholly into a DST gap that week)
