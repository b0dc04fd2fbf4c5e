"""A small asyncio MQTT 3.1.1 client: only what a simulated device needs.

CONNECT (clean session, keepalive, last will), SUBSCRIBE, PUBLISH QoS 0/1 both ways
(PUBACK sent and awaited), PINGREQ, DISCONNECT, and an abrupt close that makes the broker
publish the last will. Callback-based (``asyncio.Protocol``), no task or thread per
connection: a fleet of 10,000 devices is 10,000 sockets and nothing else.

Why not aiomqtt: it wraps one paho client per connection and runs a ``loop_misc`` task
that wakes every second per client. Measured on this 2-core machine against mosquitto
2.0.11 (``bench/sim_scale.py --compare-aiomqtt 10000``), 10,000 idle connections with a
last will and keepalive 30 s:

==========  ==========  ============  ===================
client      connect     RSS           idle CPU (one core)
==========  ==========  ============  ===================
aiomqtt     5.5 s       +124 MB       12.3 %
this one    5.1 s       +38 MB        1.3 %
==========  ==========  ============  ===================

aiomqtt can hold the connections, but idles at ten times the CPU before a single device
message, and the DESIGN's end-to-end figure for it (~2.5k msg/s) is below the 10k msg/s the
simulator reaches with this client at 1 s telemetry (28 % of a core). Decision: this client.

TCP_NODELAY is set on every socket (Nagle + delayed ACK stalls awaited QoS 1 publishes).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
_PINGREQ = bytes((PINGREQ << 4, 0))
_DISCONNECT = bytes((DISCONNECT << 4, 0))
_MAX_PACKET = 256 * 1024 * 1024


class MqttError(Exception):
    """Connection refused, lost, or a protocol violation."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def connect_packet(client_id: str, keepalive: int, will: Will | None = None,
                   clean: bool = True, username: str | None = None,
                   password: str | None = None) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic) + _str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
        if password is not None:  # MQTT 3.1.1: a password only with a user name
            flags |= 0x40
            payload += _str(password)
    body = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive) + payload
    return _packet(CONNECT << 4, body)


def publish_packet(topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                   packet_id: int = 0) -> bytes:
    body = _str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    return _packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), body + payload)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes((q,)) for f, q in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


MessageCallback = Callable[[str, bytes], None]
LostCallback = Callable[[Exception | None], None]


class MqttClient(asyncio.Protocol):
    """One connection. ``await MqttClient.connect(...)`` returns a connected client.

    ``on_message(topic, payload)`` and ``on_lost(exc)`` run synchronously on the event
    loop; ``on_lost`` is called once, whatever closed the connection (``exc`` is None
    after :meth:`disconnect`).
    """

    def __init__(self, client_id: str, keepalive: int, on_message: MessageCallback,
                 on_lost: LostCallback | None = None) -> None:
        self.client_id = client_id
        self.keepalive = keepalive
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.connected = False
        self._buf = bytearray()
        self._next_id = 0
        self._inflight: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._ping_handle: asyncio.TimerHandle | None = None
        self._last_sent = 0.0
        self._last_recv = 0.0
        self._lost_called = False
        self._ours = False  # closed by disconnect()/abort(), not by the network
        self._error: Exception | None = None
        self.sent = 0
        self.received = 0

    # ------------------------------------------------------------------ connecting

    @classmethod
    async def connect(cls, host: str, port: int, client_id: str, *, keepalive: int = 30,
                      will: Will | None = None, on_message: MessageCallback,
                      on_lost: LostCallback | None = None,
                      timeout: float = 10.0, tls: ssl.SSLContext | None = None,
                      username: str | None = None,
                      password: str | None = None) -> MqttClient:
        """Connect (over TLS when ``tls`` is given: the context decides verification)."""
        loop = asyncio.get_running_loop()
        client = cls(client_id, keepalive, on_message, on_lost)
        client._connack = loop.create_future()
        client._closed = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: client, host, port, ssl=tls,
                    server_hostname=host if tls is not None else None)
                assert client.transport is not None
                client._write(connect_packet(client_id, keepalive, will,
                                             username=username, password=password))
                await client._connack
        except BaseException as err:
            client._silent_abort()
            if isinstance(err, TimeoutError):
                raise MqttError(f"connect to {host}:{port} timed out") from None
            if isinstance(err, ssl.SSLError):
                raise MqttError(f"TLS to {host}:{port}: {err.reason or err}") from None
            if isinstance(err, OSError):
                raise MqttError(f"connect to {host}:{port}: {err.strerror or err}") from None
            raise
        client.connected = True
        client._schedule_ping()
        return client

    def _silent_abort(self) -> None:
        self._lost_called = True  # a connect that failed reports through its exception
        if self.transport is not None:
            self.transport.abort()

    # ---------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._last_recv = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self._last_recv = time.monotonic()
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        try:
            while end - pos >= 2:
                first = buf[pos]
                length, mult, i, complete = 0, 1, pos + 1, False
                while i < end:
                    byte = buf[i]
                    i += 1
                    length += (byte & 0x7F) * mult
                    if not byte & 0x80:
                        complete = True
                        break
                    mult *= 128
                    if mult > 128**3:
                        raise MqttError("malformed remaining length")
                if not complete or end - i < length:
                    break
                if length > _MAX_PACKET:
                    raise MqttError("packet too large")
                self._handle(first, bytes(buf[i:i + length]))
                pos = i + length
        except (MqttError, IndexError) as err:
            del buf[:]
            self._fail(err if isinstance(err, MqttError) else MqttError("malformed packet"))
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        was_connected = self.connected or self._ours
        self.connected = False
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None
        err = self._error or MqttError(f"connection lost: {exc}" if exc else "connection closed")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(err)
        for fut in self._inflight.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: nobody may be waiting for it
        self._inflight.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if not self._lost_called:
            self._lost_called = True
            if self.on_lost is not None and was_connected:
                self.on_lost(None if self._ours else err)

    # ------------------------------------------------------------------ packets

    def _handle(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 0x03
            tlen = (body[0] << 8) | body[1]
            topic = body[2:2 + tlen].decode("utf-8", "replace")
            pos = 2 + tlen
            if qos:
                raw_id = body[pos:pos + 2]
                pos += 2
                if qos == 1:
                    self._write(bytes((PUBACK << 4, 2)) + raw_id)
                else:  # QoS 2 is never requested by the device; answer minimally
                    self._write(bytes((0x50, 2)) + raw_id)
            self.received += 1
            self.on_message(topic, body[pos:])
        elif kind in (PUBACK, SUBACK, UNSUBACK):
            pid = (body[0] << 8) | body[1]
            fut = self._inflight.pop(pid, None)
            if fut is not None and not fut.done():
                if kind == SUBACK and 0x80 in body[2:]:
                    fut.set_exception(MqttError("subscription refused"))
                else:
                    fut.set_result(None)
        elif kind == CONNACK:
            code = body[1] if len(body) > 1 else 255
            if self._connack is not None and not self._connack.done():
                if code == 0:
                    self._connack.set_result(None)
                else:
                    reason = CONNACK_REASONS.get(code, f"code {code}")
                    self._connack.set_exception(MqttError(f"connection refused: {reason}"))
        elif kind == PINGRESP:
            pass
        elif kind == 6:  # PUBREL for an incoming QoS 2
            self._write(bytes((0x70, 2)) + body[:2])
        else:
            raise MqttError(f"unexpected packet type {kind}")

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise MqttError("not connected")
        self.transport.write(data)
        self.sent += 1
        self._last_sent = time.monotonic()

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight:
                return self._next_id
        raise MqttError("no free packet id")

    def _fail(self, err: Exception) -> None:
        self._error = err
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows from the loop

    # ------------------------------------------------------------------ keepalive

    def _schedule_ping(self) -> None:
        if self.keepalive <= 0:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_sent + self.keepalive - time.monotonic())
        self._ping_handle = loop.call_later(delay, self._ping)

    def _ping(self) -> None:
        self._ping_handle = None
        if not self.connected or self.transport is None:
            return
        now = time.monotonic()
        if now - self._last_recv > self.keepalive * 2:
            self._fail(MqttError("keepalive timeout: no answer from the broker"))
            return
        if now - self._last_sent >= self.keepalive - 0.5:
            self._write(_PINGREQ)
        self._schedule_ping()

    # ------------------------------------------------------------------ public API

    def publish(self, topic: str, payload: bytes, qos: int = 0,
                retain: bool = False) -> asyncio.Future[None] | None:
        """Queue a publish; for QoS 1 returns a future resolved by the PUBACK."""
        if not self.connected:
            raise MqttError("not connected")
        if qos == 0:
            self._write(publish_packet(topic, payload, 0, retain))
            return None
        pid = self._packet_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[pid] = fut
        self._write(publish_packet(topic, payload, 1, retain, pid))
        return fut

    def subscribe(self, filters: list[tuple[str, int]]) -> asyncio.Future[None]:
        if not self.connected:
            raise MqttError("not connected")
        pid = self._packet_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[pid] = fut
        self._write(subscribe_packet(pid, filters))
        return fut

    @property
    def unacked(self) -> int:
        return len(self._inflight)

    async def wait_unacked(self, timeout: float) -> None:
        """Wait until every QoS 1 publish in flight is acknowledged (or ``timeout``)."""
        pending = [f for f in self._inflight.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
            for f in pending:  # retrieve exceptions so asyncio does not log them
                if f.done() and not f.cancelled():
                    f.exception()

    async def disconnect(self, timeout: float = 2.0) -> None:
        """A clean DISCONNECT: the broker discards the last will."""
        self._ours = True
        self.connected = False
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(MqttError):
                self._write(_DISCONNECT)
            self.transport.close()
        await self.wait_closed(timeout)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, like a reset or a lost link: the broker
        publishes the last will."""
        self._ours = True
        self.connected = False
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self, timeout: float = 2.0) -> None:
        if self._closed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), timeout)
