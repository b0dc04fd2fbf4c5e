"""One aiomqtt session that stays up: reconnect with jittered backoff, resubscribe after
every reconnect, TCP_NODELAY on the socket (awaiting QoS 1 with Nagle on is ~30 msg/s)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_tui.service import mqtt_wire
from fleet_tui.service.outbox import Outgoing

log = logging.getLogger(__name__)
# aiomqtt warns on every publish beyond 10 awaiting their PUBACK; batches do that by design.
_paho_log = logging.getLogger("fleet_tui.service.mqtt.client")
_paho_log.setLevel(logging.ERROR)
MessageHandler = Callable[[str, bytes], None]


class MqttSession:
    """Run with ``await session.run(stop)``; ``publish_many`` at any time (it waits for a
    connection, within limits)."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: MessageHandler,
        *,
        will: aiomqtt.Will | None = None,
        keepalive: int = 30,
        qos: int = 1,
        on_connect: Callable[[], None] | None = None,
        max_backoff: float = 10.0,
        session_expiry_s: int = 0,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        mqtt5: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.will = will
        self.keepalive = keepalive
        self.qos = qos
        self.on_connect = on_connect
        self.max_backoff = max_backoff
        # > 0: a persistent session, so the broker queues the QoS 1 requests that arrive
        # while the service is down (a restart, a kill -9) instead of dropping them.
        self.session_expiry_s = session_expiry_s
        self.tls_context = tls_context
        self.username, self.password = username, password
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        # publish_many's pacing and patience (see there).
        self.max_unwritten = 16  # paho's queued writes: runs of up to 256 messages, or acks
        self.max_unacked = 30_000  # message ids, of 65,535
        self.reconnect_wait_s = 30.0
        self._stop: asyncio.Event | None = None
        # Set by the owner when it winds down: publishes still go out while connected,
        # but nothing waits for a reconnection any more.
        self.draining: asyncio.Event | None = None
        self.connections = 0
        # MQTT 3.1.1 unless asked for 5: nothing here needs v5 properties, and paho decodes
        # a Properties object for every v5 PUBLISH (and PUBACK): 45% of the service's CPU
        # under load, 1,375 -> 2,378 accepted updates/s without (bench/shadow_throughput.py).
        # With 5, a broker that refuses it is retried with 3.1.1.
        self.protocol = aiomqtt.ProtocolVersion.V5 if mqtt5 else aiomqtt.ProtocolVersion.V311

    def _make_client(self) -> aiomqtt.Client:
        session: dict[str, Any] = {}
        if self.session_expiry_s > 0:
            if self.protocol == aiomqtt.ProtocolVersion.V5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.session_expiry_s
                session = {"clean_start": False, "properties": props}
            else:
                session = {"clean_session": False}
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            logger=_paho_log,
            protocol=self.protocol,
            will=self.will,
            keepalive=self.keepalive,
            # 0 = no client-side cap: with a cap paho rescans every outstanding message on
            # each PUBACK (O(n) per ack, ~9% of the service's CPU in 400-message batches).
            max_inflight_messages=0,
            max_queued_outgoing_messages=0,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            timeout=10,
            tls_context=self.tls_context,
            # paho checks the host name itself unless told not to; follow the context.
            tls_insecure=(None if self.tls_context is None
                          else not self.tls_context.check_hostname),
            username=self.username,
            password=self.password,
            **session,
        )

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        backoff = 0.2
        while not stop.is_set():
            try:
                async with self._make_client() as client:
                    # paho formats a DEBUG line per packet even when nothing prints it (4%
                    # of the service's CPU); lost connections still surface as MqttError.
                    client._client.disable_logger()
                    self.client = client
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=self.qos)
                    self.connections += 1
                    self.connected.set()
                    backoff = 0.2
                    log.info("connected to %s:%d (%d subscriptions)", self.host, self.port,
                             len(self.subscriptions))
                    if self.on_connect is not None:
                        self.on_connect()
                    await self._pump(client, stop)
            except aiomqtt.MqttError as err:
                if self.protocol == aiomqtt.ProtocolVersion.V5 and "protocol" in str(err).lower():
                    log.info("broker refuses MQTT 5; falling back to 3.1.1")
                    self.protocol = aiomqtt.ProtocolVersion.V311
                    continue
                log.warning("MQTT connection to %s:%d lost: %s", self.host, self.port, err)
            finally:
                self.connected.clear()
                self.client = None
            if stop.is_set():
                break
            delay = backoff * random.uniform(0.5, 1.5)  # jitter: no thundering herd
            backoff = min(backoff * 2, self.max_backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _pump(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Deliver messages from paho's on_message callback until disconnect or ``stop``.

        aiomqtt's ``messages`` iterator costs a Message object, a queue put, a task and an
        ``asyncio.wait`` per message; taking paho's callback directly (the way publish_many
        already publishes) removes that from the service's inner loop. Both run on this
        event loop's thread, so the handler sees messages in order, as before.
        """
        paho = client._client  # aiomqtt's paho client, as in publish_many

        def deliver(_client: object, _userdata: object, message: Any) -> None:
            try:
                self.on_message(message.topic, message.payload)
            except Exception:  # one bad message must never stop the service
                log.exception("handler failed for %s", message.topic)

        # Messages that arrived since subscribing sit in aiomqtt's queue: they go first,
        # and the callback is swapped with no await in between, so none is lost or reordered.
        queued = client._queue
        while not queued.empty():
            m = queued.get_nowait()
            payload = m.payload
            if not isinstance(payload, (bytes, bytearray)):
                payload = b"" if payload is None else str(payload).encode()
            try:
                self.on_message(m.topic.value, bytes(payload))
            except Exception:
                log.exception("handler failed for %s", m.topic.value)
        paho.on_message = deliver
        # MQTT 3.1.1: PUBACKs and QoS 0/1 requests skip paho's per-message objects.
        undo = (mqtt_wire.install(paho, self.on_message)
                if self.protocol == aiomqtt.ProtocolVersion.V311 else (lambda: None))
        # Every publish goes to paho directly (publish_many), so aiomqtt's on_publish has
        # no future to resolve; unset, paho also skips building a ReasonCode and
        # Properties per QoS 0 message and per PUBACK for it (~10% of a fan-out's CPU).
        paho.on_publish = None
        disconnected: asyncio.Future[Any] = client._disconnected
        stopper: asyncio.Future[Any] = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({disconnected, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if disconnected.done():
                cause = disconnected.exception()
                raise aiomqtt.MqttError("Disconnected during message iteration") from cause
        finally:
            stopper.cancel()
            undo()
            paho.on_message = client._on_message
            paho.on_publish = client._on_publish

    async def publish_many(self, messages: Sequence[Outgoing]) -> int:
        """Hand messages to the client in order; returns how many were handed over.

        Runs of up to 256 messages are encoded into one write (``mqtt_wire``); QoS 1
        delivery (PUBACK) is tracked in paho's table; we do not await each PUBACK, which is
        what limited a batch to a few hundred messages a second. The loop yields every few
        hundred messages so reading and keep-alive pings go on during a large batch, and
        it paces itself on what paho has not yet written or had acknowledged (see
        ``_backpressure``). A connection lost mid-batch does not drop the rest: the batch
        resumes on the next connection (these are answers to committed changes) from the
        oldest message the old connection had not written or had not had acknowledged
        (some may go twice, as QoS 1 allows), unless ``reconnect_wait_s`` passes first.
        """
        sent = 0
        while sent < len(messages):
            client = self.client
            if client is None:
                if not await self._await_connection():
                    break
                continue
            paho = client._client  # aiomqtt's paho client; see the docstring
            v5 = self.protocol == aiomqtt.ProtocolVersion.V5
            start, mids = sent, list[int]()
            while sent < len(messages):
                if paho._sock is None or self.client is not client:  # connection lost
                    resume = start + _first_pending(paho, mids)
                    log.warning("connection lost with %d of %d messages handed over; "
                                "resuming at %d on the next connection", sent, len(messages),
                                resume)
                    sent = resume
                    if self._stopping() or not await self._await_disconnect(client):
                        return self._dropped(sent, messages)
                    break
                chunk = messages[sent:sent + 256]
                queued = mqtt_wire.queue_publishes(paho, chunk, v5)
                mids += queued
                sent += len(queued)
                if len(queued) < len(chunk):  # a message id still outstanding
                    await asyncio.sleep(0.002)  # let its PUBACK in, whatever the span says
                    await self._backpressure(paho, force=True)
                    continue
                await asyncio.sleep(0)
                await self._backpressure(paho)
        return self._dropped(sent, messages)

    def _dropped(self, sent: int, messages: Sequence[Outgoing]) -> int:
        if sent < len(messages):
            log.error("dropped %d of %d messages: no working connection%s",
                      len(messages) - sent, len(messages),
                      " while shutting down" if self._stopping() else
                      f" within {self.reconnect_wait_s:.0f} s")
        return sent

    async def _backpressure(self, paho: Any, *, force: bool = False) -> None:
        """Wait while paho holds more than ``max_unwritten`` packets it could not write yet
        (the socket is full: memory would grow without bound in a 100k fan-out) or while
        the QoS 1 messages awaiting their PUBACK span more than ``max_unacked`` message ids
        (ids are 16 bits and drawn for QoS 0 too: near 65,535 paho would refuse a publish
        whose id is still outstanding). ``force``: that refusal happened; wait for acks."""
        while (len(paho._out_packet) > self.max_unwritten
               or _mid_span(paho) > (self.max_unacked // 2 if force else self.max_unacked)):
            if self.client is None or self.client._client is not paho:
                return  # disconnected: publish_many sees it on its next publish
            await asyncio.sleep(0.002)

    def _stopping(self) -> bool:
        """No next connection is coming, or the service is draining: do not wait for one."""
        return (self._stop is None or self._stop.is_set()
                or (self.draining is not None and self.draining.is_set()))

    async def _await_connection(self) -> bool:
        """Wait for the next connection (at most ``reconnect_wait_s``, or until stopping)."""
        if self._stopping():
            return False
        waits = [asyncio.ensure_future(e.wait()) for e in
                 (self.connected, self._stop, self.draining) if e is not None]
        try:
            await asyncio.wait(waits, timeout=self.reconnect_wait_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.client is not None

    async def _await_disconnect(self, client: aiomqtt.Client) -> bool:
        """The old client is gone once ``run`` has cleared it (then ``connected`` is set
        again by the next connection); False if it neither works nor goes."""
        deadline = asyncio.get_running_loop().time() + self.reconnect_wait_s
        while self.client is client and not self._stopping():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


def _mid_span(paho: Any) -> int:
    """How many message ids lie between the oldest unacknowledged QoS 1 publish and the
    newest id drawn."""
    out = paho._out_messages
    if not out:
        return 0
    oldest = next(iter(out))
    return int((paho._last_mid - oldest) % 65535)


def _first_pending(paho: Any, mids: Sequence[int]) -> int:
    """Index into ``mids`` (this connection's publishes, in order) of the first one paho
    still holds unwritten or unacknowledged; ``len(mids)`` if none."""
    pending = set(paho._out_messages)
    # Unwritten PUBLISHes only: a queued PUBACK's id is the broker's, not one of ours.
    pending.update(p["mid"] for p in paho._out_packet
                   if p.get("mid") and p["command"] & 0xF0 == mqtt_wire.PUBLISH)
    for i, mid in enumerate(mids[-65535:], max(0, len(mids) - 65535)):
        if mid in pending:
            return i
    return len(mids)
