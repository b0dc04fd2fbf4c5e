"""Messages the service will publish, released only after their batch is durable."""

from __future__ import annotations

from typing import NamedTuple


class Outgoing(NamedTuple):
    """A tuple: a fan-out builds five per device, and a frozen dataclass's ``__init__``
    (a setattr per field) cost three times as much."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
