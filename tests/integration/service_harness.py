"""Helpers to run the real FleetService against the test's mosquitto, and an MQTT peer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson

from fleet_tui.config import Settings
from fleet_tui.registry.registry import Registry
from fleet_tui.service.fleet_service import FleetService


def settings_for(broker: str, db: str, **shadow: Any) -> Settings:
    s = Settings(db=db, broker=broker)
    for key, value in shadow.items():
        setattr(s.shadow, key, value)
    return s


@contextlib.asynccontextmanager
async def running_service(settings: Settings, registry: Registry) -> AsyncIterator[FleetService]:
    service = FleetService(settings, registry)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.session.connected.wait(), 10)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@dataclass
class Peer:
    """An MQTT client (a device or an app) that records what it receives."""

    client: aiomqtt.Client
    inbox: list[tuple[str, dict[str, Any] | bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> None:
        data = payload if isinstance(payload, (bytes, bytearray)) else orjson.dumps(payload)
        await self.client.publish(topic, data, qos=qos, retain=retain)

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> tuple[str, Any]:
        """The first received (topic, payload) satisfying ``pred(topic, payload)``."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for item in self.inbox[seen:]:
                    if pred(*item):
                        return item
                seen = len(self.inbox)
                self.arrived.clear()
                await self.arrived.wait()

    def received(self, suffix: str) -> list[Any]:
        return [p for t, p in self.inbox if t.endswith(suffix)]


@contextlib.asynccontextmanager
async def peer(
    broker: str, subscriptions: list[str], client_id: str | None = None,
    will: aiomqtt.Will | None = None,
) -> AsyncIterator[Peer]:
    host, port = broker.split(":")
    client = aiomqtt.Client(
        host, int(port), identifier=client_id or f"peer-{uuid.uuid4().hex[:8]}", will=will,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], keepalive=5,
        max_inflight_messages=1000,
    )
    async with client:
        p = Peer(client)
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)

        async def read() -> None:
            async for message in client.messages:
                raw = bytes(message.payload)  # type: ignore[arg-type]
                try:
                    payload: Any = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    payload = raw
                p.inbox.append((message.topic.value, payload))
                p.arrived.set()

        reader = asyncio.create_task(read())
        try:
            yield p
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
