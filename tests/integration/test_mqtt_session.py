"""The service's MQTT session against a real mosquitto: a batch survives a lost connection."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from fleet_tui.service.mqtt import MqttSession
from fleet_tui.service.outbox import Outgoing
from fleet_tui.sim.mqtt_lite import MqttClient
from tests.integration.mosquitto import Mosquitto

N = 40_000


async def _retained(broker: Mosquitto, timeout: float = 30.0) -> set[str]:
    """The topics the broker holds a retained message for (each is sent on subscribe)."""
    got: set[str] = set()
    client = await MqttClient.connect(broker.host, broker.port, "reader",
                                      on_message=lambda t, p: got.add(t))
    await client.subscribe([("batch/#", 0)])
    deadline = time.monotonic() + timeout
    seen = -1
    while len(got) != seen and time.monotonic() < deadline:  # until quiet for 0.5 s
        seen = len(got)
        await asyncio.sleep(0.5)
    await client.disconnect()
    return got


async def test_a_batch_cut_by_a_broker_restart_resumes_on_the_next_connection(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fleet_tui.service.mqtt")
    stop = asyncio.Event()
    session = MqttSession(mosquitto.host, mosquitto.port, "batcher", [], lambda t, p: None,
                          max_backoff=0.5)
    task = asyncio.create_task(session.run(stop))
    await asyncio.wait_for(session.connected.wait(), 10)
    batch = [Outgoing(f"batch/{i:06d}", b"x", qos=1, retain=True) for i in range(N)]
    publishing = asyncio.create_task(session.publish_many(batch))
    # Cut the connection a few thousand messages in (paho numbers each QoS 1 publish).
    while session.client is not None and session.client._client._last_mid < 3000:
        await asyncio.sleep(0.001)
    assert not publishing.done()
    await asyncio.to_thread(mosquitto.restart, 0.5)  # no persistence: retained ones go
    sent = await asyncio.wait_for(publishing, 60)
    assert sent == N  # handed over in full: the tail went out on the new connection
    assert session.connections == 2
    deadline = time.monotonic() + 30  # handed over; now acknowledged by the broker
    while session.client is not None and session.client._client._out_messages \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    held = await _retained(mosquitto)
    indexes = sorted(int(t.rsplit("/", 1)[1]) for t in held)
    # It resumed at the oldest message the old connection had not written or not had
    # acknowledged, which is at or before where publishing stopped...
    (cut,) = [r for r in caplog.records if "resuming at" in r.getMessage()]
    handed, resume = (int(x) for x in re.findall(
        r"with (\d+) of \d+ messages handed over; resuming at (\d+)", cut.getMessage())[0])
    assert 0 < resume <= handed  # not from the start: what the broker had acked stays done
    # ...and everything from there to the end is on the broker, in one run.
    assert indexes == list(range(resume, N))
    stop.set()
    await asyncio.wait_for(task, 10)
