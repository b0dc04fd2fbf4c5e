"""Presence: online/offline from the retained presence topic and its last will, last seen
from any traffic, and "gone dark" for a device silent for N telemetry intervals."""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from fleet_tui.domain.health import is_gone_dark
from fleet_tui.service.events import EventBus, PresenceChanged

log = logging.getLogger(__name__)


class PresenceTracker:
    def __init__(
        self,
        events: EventBus,
        interval_for: Callable[[str], float],
        missed_intervals: int = 3,
    ) -> None:
        self.events = events
        self.interval_for = interval_for
        self.missed = missed_intervals
        self.online: dict[str, bool] = {}
        self.last_seen: dict[str, float] = {}
        self.pending: dict[str, tuple[bool, float]] = {}
        self.rejected = 0

    def restore(self, state: dict[str, tuple[bool, float | None]], now: float) -> None:
        """Start from the registry's view (after a restart) so gone-dark still works."""
        for thing, (online, last_seen) in state.items():
            self.online[thing] = online
            self.last_seen[thing] = last_seen if last_seen is not None else now

    def on_presence(self, thing: str, payload: bytes, now: float) -> None:
        try:
            data = orjson.loads(payload) if payload else {}
            state = data.get("state") if isinstance(data, dict) else None
            if state not in ("online", "offline"):
                raise ValueError(f"state must be online|offline, got {state!r}")
        except (orjson.JSONDecodeError, ValueError) as err:
            self.rejected += 1
            log.debug("bad presence from %s: %s", thing, err)
            return
        online = state == "online"
        # A retained "online" replayed when the service (re)subscribes says nothing about now:
        # only the device's own traffic moves last_seen forward.
        ts = data.get("ts") if isinstance(data.get("ts"), (int, float)) else None
        seen = min(float(ts), now) if ts is not None else now
        self._set(thing, online, "connect" if online else "will", seen)

    def on_seen(self, thing: str, now: float) -> None:
        self.last_seen[thing] = now
        if not self.online.get(thing):
            self._set(thing, True, "traffic", now)
        else:
            self.pending[thing] = (True, now)

    def sweep(self, now: float) -> list[str]:
        """Mark devices silent for ``missed`` telemetry intervals offline."""
        dark = [
            thing for thing, on in self.online.items()
            if on and is_gone_dark(self.last_seen.get(thing, now), now, self.interval_for(thing),
                                   self.missed)
        ]
        for thing in dark:
            self._set(thing, False, "gone-dark", self.last_seen.get(thing, now))
        return dark

    def _set(self, thing: str, online: bool, reason: str, ts: float) -> None:
        changed = self.online.get(thing) != online
        self.online[thing] = online
        self.last_seen[thing] = max(self.last_seen.get(thing, ts), ts)
        self.pending[thing] = (online, self.last_seen[thing])
        if changed:
            self.events.emit(PresenceChanged(thing, online, reason, ts))

    def take_pending(self) -> list[tuple[str, bool, float]]:
        pending, self.pending = self.pending, {}
        return [(t, on, ts) for t, (on, ts) in pending.items()]
