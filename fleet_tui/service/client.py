"""A client of the running service, for the CLI and the console: shadow get/update over the
AWS shadow topics (as any AWS IoT app would), and a stream of service events."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import orjson

from fleet_tui.config import Settings
from fleet_tui.service.topics import Topics, valid_shadow_name, valid_thing


class ServiceError(Exception):
    """The service answered /rejected (``code``) or did not answer at all."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ShadowClient:
    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.settings = settings
        self.topics = Topics(settings.shadow_prefix, settings.fleet_prefix)
        self.timeout = timeout

    def _client(self) -> aiomqtt.Client:
        ctx = self.settings.ssl_context()
        username, password = self.settings.mqtt_credentials()
        return aiomqtt.Client(
            self.settings.broker_host, self.settings.broker_port,
            identifier=f"fleet-tui-cli-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], timeout=self.timeout,
            tls_context=ctx, tls_insecure=None if ctx is None else not ctx.check_hostname,
            username=username, password=password,
        )

    async def request(
        self, thing: str, op: str, body: dict[str, Any], name: str = ""
    ) -> dict[str, Any]:
        """Publish one shadow request and wait for its accepted/rejected answer."""
        if not valid_thing(thing):
            raise ServiceError(f"invalid thing name {thing!r}", 400)
        if not valid_shadow_name(name):
            raise ServiceError(f"invalid shadow name {name!r}", 400)
        token = uuid.uuid4().hex[:16]
        body = {**body, "clientToken": token}
        accepted = self.topics.shadow(thing, name, op, "accepted")
        rejected = self.topics.shadow(thing, name, op, "rejected")
        try:
            async with self._client() as client:
                for topic in (accepted, rejected):
                    _check_granted(topic, await client.subscribe(topic, qos=1))
                await client.publish(self.topics.shadow(thing, name, op), orjson.dumps(body),
                                     qos=1)
                async with asyncio.timeout(self.timeout):
                    async for message in client.messages:
                        data = orjson.loads(bytes(message.payload))
                        if data.get("clientToken") != token:
                            continue
                        if message.topic.matches(rejected):
                            raise ServiceError(
                                f"{data.get('code')}: {data.get('message')}", data.get("code"))
                        return dict(data)
        except TimeoutError:
            raise ServiceError(
                f"no answer from the shadow service via {self.settings.broker} within "
                f"{self.timeout:g} s (is `fleet-tui serve` running?)") from None
        except aiomqtt.MqttError as err:
            raise ServiceError(f"broker {self.settings.broker}: {err}") from None
        raise ServiceError("connection closed before an answer")

    async def get(self, thing: str, name: str = "") -> dict[str, Any]:
        return await self.request(thing, "get", {}, name)

    async def update_desired(
        self, thing: str, desired: dict[str, Any] | None, name: str = "",
        version: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"state": {"desired": desired}}
        if version is not None:
            body["version"] = version
        return await self.request(thing, "update", body, name)

    async def events(
        self, on_connect: Callable[[], object] | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(kind, payload) for shadow documents, presence and telemetry, as they happen;
        ``on_connect`` runs once the subscriptions are in place."""
        subs = [
            self.topics.shadow("+", "", "update", "documents"),
            self.topics.shadow("+", "+", "update", "documents"),
            self.topics.presence("+"),
            self.topics.telemetry("+"),
        ]
        async with self._client() as client:
            for topic in subs:
                await client.subscribe(topic, qos=0)
            if on_connect is not None:
                on_connect()
            async for message in client.messages:
                try:
                    data = orjson.loads(bytes(message.payload))
                except orjson.JSONDecodeError:
                    continue
                parsed = self.topics.parse_fleet(message.topic.value)
                kind = parsed.kind if parsed else "documents"
                yield kind, {"topic": message.topic.value, **data}


def _check_granted(topic: str, granted: Any) -> None:
    """A refused subscription (SUBACK >= 0x80, e.g. the broker's ACL) is an error now,
    not a timeout later."""
    for code in granted or ():
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            raise ServiceError(f"broker refused the subscription to {topic} "
                               f"(not authorized for this user?)", 403)


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs to a desired-state object: values are JSON when they parse
    (``true``, ``60``, ``null``, ``"x"``), else strings; ``a.b=1`` nests."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{key!r}: {part!r} is both a value and an object")
            node = child
        node[parts[-1]] = value
    return out
