"""Integration fixtures: a real mosquitto per test (on a free port)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.mosquitto import Mosquitto


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    broker = Mosquitto().start()
    try:
        yield broker
    finally:
        broker.close()
