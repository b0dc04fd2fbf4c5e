"""The service's MQTT session against a real mosquitto: a batch survives a lost connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


async def _collect(broker: Mosquitto, filters: list[tuple[str, int]], got: list[tuple[str, bytes]]
                   ) -> MqttClient:
    client = await MqttClient.connect(broker.host, broker.port, "collector",
                                      on_message=lambda t, p: got.append((t, bytes(p))))
    await asyncio.wait_for(client.subscribe(filters), 10)
    return client


async def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mqtt5", [False, True], ids=["v311", "v5"])
async def test_bulk_publishes_arrive_byte_exact_and_in_order(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, mqtt5: bool) -> None:
    """publish_many writes runs of PUBLISH packets itself (service/mqtt_wire.py): every
    remaining-length size (1 to 3 bytes), QoS 0 and 1, retain, a non-ASCII topic, an
    empty payload; a wildcard topic is refused alone. Every QoS 1 id is acknowledged."""
    got: list[tuple[str, bytes]] = []
    reader = await _collect(mosquitto, [("wire/#", 1)], got)
    stop = asyncio.Event()
    session = MqttSession(mosquitto.host, mosquitto.port, "wire", [], lambda t, p: None,
                          mqtt5=mqtt5)
    task = asyncio.create_task(session.run(stop))
    await asyncio.wait_for(session.connected.wait(), 10)
    sizes = [0, 1, 100, 127, 128, 1000, 16_371, 16_384, 70_000, 200_000]
    batch = [Outgoing(f"wire/{i:04d}/{'dévice-ü' if i % 7 == 0 else 'd'}",
                      bytes((i + j) % 251 for j in range(sizes[i % len(sizes)])),
                      qos=i % 2, retain=i % 5 == 0)
             for i in range(600)]
    # What paho would refuse is skipped alone, before it takes a message id.
    bad = [Outgoing("wire/+/nope", b"x"), Outgoing("", b"x", qos=1),
           Outgoing("wire/text", "not bytes", qos=1),  # type: ignore[arg-type]
           Outgoing("wire/qos2", b"x", qos=2)]
    assert await session.publish_many([*batch[:300], *bad, *batch[300:]]) == 604
    await _wait_for(lambda: len(got) >= len(batch))
    assert got == [(m.topic, m.payload) for m in batch]
    assert any("not a topic name" in r.getMessage() for r in caplog.records)
    paho = session.client._client  # type: ignore[union-attr]
    await _wait_for(lambda: not paho._out_messages)
    assert not paho._out_messages and paho._inflight_messages == 0
    # The retained ones are the broker's now, as sent (an empty one clears, as MQTT says).
    again: list[tuple[str, bytes]] = []
    late = await _collect(mosquitto, [("wire/#", 0)], again)
    retained = {m.topic: m.payload for m in batch if m.retain and m.payload}
    await _wait_for(lambda: len(again) >= len(retained))
    assert dict(again) == retained
    for client in (reader, late):
        await client.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_requests_reach_the_handler_once_and_are_acknowledged(
        mosquitto: Mosquitto) -> None:
    """Incoming QoS 0/1 PUBLISHes skip paho's message objects (service/mqtt_wire.py): the
    handler sees each one in order, a handler error stops nothing, and QoS 1 requests are
    acknowledged: a persistent session that reconnects gets none of them again."""
    got: list[tuple[str, bytes]] = []

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("a bad request")
        got.append((topic, payload))

    async def connect() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        session = MqttSession(mosquitto.host, mosquitto.port, "requests", ["req/#"], handler,
                              session_expiry_s=300)
        task = asyncio.create_task(session.run(stop))
        await asyncio.wait_for(session.connected.wait(), 10)
        return stop, task

    stop, task = await connect()
    device = await MqttClient.connect(mosquitto.host, mosquitto.port, "device",
                                      on_message=lambda t, p: None)
    sent = []
    for i in range(300):
        topic, payload = f"req/{i:03d}/ü", (b"boom" if i == 10 else b"r" * (i * 37))
        device.publish(topic, payload, qos=i % 2)
        if payload != b"boom":
            sent.append((topic, payload))
    await device.wait_unacked(10)
    await _wait_for(lambda: len(got) >= len(sent))
    assert got == sent
    await asyncio.sleep(0.5)  # the service's PUBACKs reach the broker
    stop.set()
    await asyncio.wait_for(task, 10)
    got.clear()
    stop, task = await connect()  # same id, persistent: unacked ones would return
    device.publish("req/after", b"fresh", qos=1)
    await device.wait_unacked(10)
    await _wait_for(lambda: ("req/after", b"fresh") in got)
    assert got == [("req/after", b"fresh")]
    await device.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_burst_read_at_once_is_handled_without_waiting_for_more(
        mosquitto: Mosquitto) -> None:
    """The session reads the socket in large chunks (service/mqtt_wire.py) and paho takes
    only a few packets per read callback on an idle connection: a burst that arrived in
    one read is handled in full at once, not when the next packet (a ping, a minute
    later) makes the socket readable again."""
    got: list[str] = []
    stop = asyncio.Event()
    session = MqttSession(mosquitto.host, mosquitto.port, "burst", ["burst/#"],
                          lambda t, p: got.append(t), keepalive=60)
    task = asyncio.create_task(session.run(stop))
    await asyncio.wait_for(session.connected.wait(), 10)
    device = await MqttClient.connect(mosquitto.host, mosquitto.port, "burster",
                                      on_message=lambda t, p: None)
    for rounds in range(3):  # bursts of QoS 0 and 1 into a connection idle in between
        topics = [f"burst/{rounds}/{i:03d}" for i in range(200)]
        for i, topic in enumerate(topics):
            device.publish(topic, b"x" * (i % 50), qos=i % 2)
        want = 200 * (rounds + 1)
        await _wait_for(lambda: len(got) >= want, timeout=5)  # noqa: B023
        assert got[-200:] == topics
    await device.wait_unacked(10)
    await device.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


def test_one_read_callback_handles_paho_s_share_and_at_most_one_buffer_more() -> None:
    """Under a flood the read callback must return to the event loop (publishing and
    keep-alive run there): it handles what paho would, plus what is already buffered, and
    does not read the socket again while draining. A real paho client reads a socket pair
    that another thread keeps full."""
    import socket
    import threading

    import paho.mqtt.client as mqtt

    from fleet_tui.service import mqtt_wire

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    got: list[str] = []
    undo = mqtt_wire.install(client, lambda t, p: got.append(t))
    body = (7).to_bytes(2, "big") + b"req/000" + b"x" * 20
    packet = bytes([0x30, len(body)]) + body  # QoS 0 PUBLISH, 31 bytes
    flood = packet * 4000
    stop = threading.Event()

    def feed() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                theirs.sendall(flood)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        _wait_readable(ours)
        for _ in range(5):
            before = len(got)
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
            # paho's share on an idle connection is one packet; one buffer is 16 KiB.
            assert 1 <= len(got) - before <= 1 + 16384 // len(packet) + 1
        assert got and all(t == "req/000" for t in got)
    finally:
        stop.set()
        undo()
        while writer.is_alive():  # let its last sendall finish
            with contextlib.suppress(BlockingIOError):
                ours.recv(1 << 20)
            writer.join(0.01)
        theirs.close()
        ours.close()


def _wait_readable(sock: Any) -> None:
    import select

    select.select([sock], [], [], 5)


def _publish(topic: str, payload: bytes, qos: int, mid: int) -> bytes:
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode()
    body += mid.to_bytes(2, "big") if qos else b""
    body += payload
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | qos << 1]) + bytes(length) + body


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=12))
def test_packets_split_anywhere_reach_the_handler_in_order_and_are_acknowledged(
        cuts: list[int]) -> None:
    """The read path takes whole PUBLISHes and PUBACKs straight from its buffer
    (service/mqtt_wire.py) and leaves anything else, and a packet cut off by the end of a
    read, to paho: whatever the socket delivers at a time, every message reaches the
    handler once and in order, QoS 1 ones are acknowledged in that order, a PUBACK frees
    its message id, and paho still takes the packets it handles itself (a PINGRESP)."""
    import socket

    import paho.mqtt.client as mqtt

    from fleet_tui.service import mqtt_wire

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    client._sock = ours
    client._ping_t = 1.0  # a ping was sent: the PINGRESP clears it
    got: list[tuple[str, bytes]] = []
    undo = mqtt_wire.install(client, lambda t, p: got.append((t, p)))
    mids = mqtt_wire.queue_publishes(client, [Outgoing("out/a", b"1"), Outgoing("out/b", b"2")])
    sent = theirs.recv(1 << 16)  # the two PUBLISHes the client wrote
    assert sent and len(client._out_messages) == 2
    want: list[tuple[str, bytes]] = []
    acks = b""
    stream = bytearray()
    sizes = [0, 5, 120, 127, 128, 300, 16_383, 16_384, 20_000, 3]
    for i, size in enumerate(sizes):
        topic, payload, qos = f"req/{i}/é", bytes([65 + i]) * size, i % 2
        stream += _publish(topic, payload, qos, 100 + i)
        want.append((topic, payload))
        if qos:
            acks += bytes([0x40, 2, 0, 100 + i])
        if i == 3:
            stream += bytes([0x40, 2]) + mids[0].to_bytes(2, "big")  # PUBACK of out/a
        if i == 6:
            stream += bytes([0xD0, 0])  # PINGRESP: paho's
    stream += bytes([0x40, 2]) + mids[1].to_bytes(2, "big")
    try:
        at = 0
        for cut in [*cuts, len(stream)]:
            chunk = stream[at:at + cut]
            if not chunk:
                break
            at += len(chunk)
            theirs.sendall(chunk)
            _wait_readable(ours)
            while True:  # every callback the event loop would make for what arrived
                def progress() -> tuple[Any, ...]:
                    return (len(got), client._in_packet["to_process"],
                            len(client._out_messages), client._ping_t)

                before = progress()
                assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
                if progress() == before:
                    break
        assert got == want
        assert client._out_messages == {} and client._ping_t == 0
        client.loop_write()
        received = b""
        while len(received) < len(acks):
            received += theirs.recv(1 << 16)
        assert received == acks
    finally:
        undo()
        theirs.close()
        ours.close()
