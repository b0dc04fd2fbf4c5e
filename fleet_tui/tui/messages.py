"""Messages that carry results from workers and the service into the widgets.

Workers never reach into a widget: they post one of these and the widget's handler applies
it on the UI's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass(frozen=True, slots=True)
class FleetSummary:
    devices: int
    online: int
    unhealthy: int
    rollouts: int | None = None  # in flight; None: not known
    alerts: int | None = None  # open alerts; None: not known

    def __str__(self) -> str:
        rollouts = "–" if self.rollouts is None else str(self.rollouts)  # noqa: RUF001
        text = (f"{self.devices} devices · {self.online} on · {self.unhealthy} unhealthy"
                f" · rollouts {rollouts}")
        if self.alerts:
            text += f" · {self.alerts} alerts"
        return text


@dataclass(slots=True)
class FleetBatch:
    """What the service reported since the previous batch, latest value per key."""

    shadows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    presence: dict[str, bool] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.shadows or self.presence or self.health)


class FleetUpdated(Message):
    """A batch of live updates from the in-process service (every ~250 ms at most)."""

    def __init__(self, batch: FleetBatch) -> None:
        super().__init__()
        self.batch = batch


class SummaryLoaded(Message):
    def __init__(self, summary: FleetSummary) -> None:
        super().__init__()
        self.summary = summary
