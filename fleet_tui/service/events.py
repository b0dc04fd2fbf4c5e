"""Events the service emits for the console and other in-process listeners.

Listeners are plain callables run on the service's event loop; they must be quick (the
console's adapter only appends to a buffer that it drains every ~250 ms).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Not frozen (a frozen dataclass's __init__ sets each field through object.__setattr__, and
# every shadow update makes an event); nothing changes one after it is made.


@dataclass(slots=True)
class ShadowChanged:
    thing: str
    name: str
    documents: dict[str, Any]  # the AWS update/documents payload (previous, current)


@dataclass(slots=True)
class ShadowDeleted:
    thing: str
    name: str
    version: int


@dataclass(slots=True)
class PresenceChanged:
    thing: str
    online: bool
    reason: str  # "connect" | "will" | "gone-dark" | ...
    ts: float


@dataclass(slots=True)
class TelemetryReceived:
    thing: str
    health: str
    reasons: tuple[str, ...]
    telemetry: dict[str, Any]


Event = ShadowChanged | ShadowDeleted | PresenceChanged | TelemetryReceived
Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not stop the service
                log.exception("event listener failed")
