"""The service's bulk MQTT paths, under paho's connection handling.

paho spends most of its time per message on objects the service never looks at: a
``publish`` builds an ``MQTTMessage`` and an ``MQTTMessageInfo`` (with a
``threading.Condition``) and queues one packet; a PUBACK decodes a reason code and a
``Properties``; an incoming PUBLISH builds another ``MQTTMessage``. In a 100,000-thing
fan-out those were 40% of the service's CPU (py-spy, ``bench/fanout.py``). Here:

- :func:`queue_publishes` encodes a run of PUBLISH packets into one buffer, queued as one
  write; each QoS 1 message still takes a paho message id and an entry in paho's
  ``_out_messages`` (a slotted :class:`_Sent`), so PUBACKs, the id span that
  ``MqttSession`` paces on, and its resume-after-disconnect work as before.
- :func:`install` makes paho's packet dispatch take PUBACKs and QoS 0/1 PUBLISHes of an
  MQTT 3.1.1 connection directly (the message goes straight to the handler); anything
  else (QoS 2, MQTT 5, CONNACK, SUBACK, pings) goes to paho's own code. It also reads the
  socket in 16 KiB chunks (paho asks the kernel three times per packet: its first byte,
  its length, its body) and queues the PUBACKs of one read as one write (paho queues and
  sends each alone): with a fan-out's 300,000 packets each way, system calls were a third
  of the machine's CPU and the queued PUBACKs held back ``MqttSession``'s publishing.

Both lean on paho 2.x internals (``_out_packet``, ``_out_messages``, ``_packet_queue``,
``_in_packet``), as ``MqttSession`` already did; the integration tests run them against a
real mosquitto.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from fleet_tui.service.outbox import Outgoing

log = logging.getLogger(__name__)
PUBLISH, PUBACK = 0x30, 0x40
_MID = struct.Struct("!H")
_READ_SIZE = 16384  # a read callback handles at most this beyond paho's own share


class _Reader:
    """paho's ``_sock_recv``, served from one large read of the socket at a time. Where a
    packet starts, ``drain`` first takes the whole packets it can from the buffer (paho
    reads each packet byte by byte, in a fresh dict, under two locks: 7 us a packet)."""

    __slots__ = ("data", "drain", "paho", "pos", "recv", "refill", "sock")

    def __init__(self, paho: Any, recv: Callable[[int], bytes],
                 drain: Callable[[bytes, int], int] | None = None) -> None:
        self.paho = paho
        self.recv = recv
        self.drain = drain
        self.sock: Any = None
        self.data = b""
        self.pos = 0
        self.refill = True  # False: serve what is buffered, as if the socket had no more

    @property
    def pending(self) -> bool:
        """Bytes read from the socket that paho has not taken yet."""
        return self.pos < len(self.data) and self.sock is self.paho._sock

    def __call__(self, n: int) -> bytes:
        data, pos = self.data, self.pos
        if pos >= len(data) or self.sock is not self.paho._sock:
            self.data, self.pos = b"", 0
            if not self.refill:
                raise BlockingIOError  # paho keeps the part of a packet it has
            data = self.recv(_READ_SIZE)  # BlockingIOError when there is nothing
            if not data:
                return b""  # the connection closed
            self.data, self.sock, pos = data, self.paho._sock, 0
        if self.drain is not None and self.paho._in_packet["command"] == 0:
            # paho asks for a packet's first byte: the buffer's whole packets go first.
            self.pos = pos = self.drain(data, pos)
            if pos >= len(data):
                # All taken. The next read waits for the next callback: one buffer each.
                raise BlockingIOError
            # What is left (a packet for paho, or the start of one) is served from this
            # buffer only: the rest of a partial packet comes with the next callback.
            self.refill = False
        out = data[pos:pos + n]
        self.pos = pos + len(out)
        return out


class _NoInfo:
    """What paho calls on a message's info when its PUBACK comes: nothing to wake here."""

    __slots__ = ()

    def _set_as_published(self) -> None:
        pass


class _Sent:
    """A QoS 1 message awaiting its PUBACK, as paho's ``_out_messages`` needs it (paho
    reads ``qos`` and ``info`` on the ack; ``timestamp``/``state``/``dup`` on a CONNACK)."""

    __slots__ = ("dup", "mid", "state", "timestamp")
    qos = 1
    retain = False
    info = _NoInfo()

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.timestamp = 0.0
        self.state = mqtt.mqtt_ms_wait_for_puback
        self.dup = False


def _varint(n: int) -> bytes:
    if n < 0x4000:  # a PUBLISH of up to 16 KiB: one or two bytes, per message of a run
        return bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _refusal(m: Outgoing) -> tuple[bytes, bytes] | str:
    """(topic, payload) as bytes, or why paho would have refused the message."""
    try:
        topic = m.topic.encode()
    except (AttributeError, UnicodeEncodeError):
        return "not a UTF-8 topic"
    if not topic or b"+" in topic or b"#" in topic or len(topic) > 65535:
        return "not a topic name"
    if not isinstance(m.payload, (bytes, bytearray)) or len(m.payload) > 268_435_455 - 65_542:
        return "payload not bytes, or too large"
    if m.qos not in (0, 1):
        return f"QoS {m.qos!r} (this path sends 0 and 1)"
    return topic, bytes(m.payload)


def queue_publishes(paho: Any, messages: Sequence[Outgoing], v5: bool = False) -> list[int]:
    """Queue ``messages`` as one write. Returns each one's message id, in order (ids are
    drawn for QoS 0 too, as paho does); stops early (fewer ids) at a QoS 1 message whose id
    is still outstanding, the case paho answers ``MQTT_ERR_QUEUE_SIZE``. A message paho
    would refuse (a wildcard or empty topic, a payload not bytes) is skipped with an error
    logged, its id 0: it is checked before it takes an id, so none is left unanswerable.

    The write carries its first message's id, so while any of it is unwritten
    ``MqttSession``'s resume point is at or before that message."""
    out = paho._out_messages
    buf = bytearray()
    mids: list[int] = []
    props = b"\x00" if v5 else b""
    # Ids are drawn as paho's _mid_generate does, under its lock, but once per run.
    with paho._out_message_mutex, paho._mid_generate_mutex:
        mid = paho._last_mid
        for m in messages:
            topic_s, payload, qos, retain = m
            if type(payload) is bytes and (qos == 0 or qos == 1) and type(topic_s) is str \
                    and topic_s.isascii() and 0 < len(topic_s) <= 65535 \
                    and "+" not in topic_s and "#" not in topic_s \
                    and len(payload) <= 268_435_455 - 65_542:
                topic = topic_s.encode()  # _refusal's checks, inline for the common case
            else:
                checked = _refusal(m)
                if isinstance(checked, str):
                    log.error("publish to %r refused (%s); skipped", m.topic, checked)
                    mids.append(0)
                    continue
                topic, payload = checked
            mid = mid + 1 if mid < 65535 else 1
            if qos:
                if mid in out:
                    mid = mid - 1 if mid > 1 else 65535  # not drawn after all
                    break
                out[mid] = _Sent(mid)
                paho._inflight_messages += 1
                head = _MID.pack(mid) + props
                buf.append(PUBLISH | 0x02 | (0x01 if retain else 0))
            else:
                head = props
                buf.append(PUBLISH | (0x01 if retain else 0))
            buf += _varint(2 + len(topic) + len(head) + len(payload))
            buf += _MID.pack(len(topic))
            buf += topic
            buf += head
            buf += payload
            mids.append(mid)
        paho._last_mid = mid
    first = next((mid for mid in mids if mid), 0)
    if buf:
        # Queued as a QoS 1 packet: paho then writes it without the QoS 0 bookkeeping
        # (an info to mark published); the acks are per message id, as above.
        paho._packet_queue(PUBLISH, buf, first, 1)
    return mids


def install(paho: Any, handler: Callable[[str, bytes], None]) -> Callable[[], None]:
    """Take PUBACKs and QoS 0/1 PUBLISHes of ``paho``'s MQTT 3.1.1 connection directly
    (``handler(topic, payload)`` per message, its exceptions logged). Returns the undo."""
    original = paho._packet_handle
    original_read = paho.loop_read
    out = paho._out_messages
    lock = paho._out_message_mutex
    success = mqtt.MQTT_ERR_SUCCESS
    acks = bytearray()  # PUBACKs of this read, in the order their PUBLISHes came

    def send_acks() -> None:
        if acks:
            paho._packet_queue(PUBACK, bytes(acks), 0, 0)
            acks.clear()

    def loop_read(max_packets: int = 1) -> Any:
        # paho stops after max_packets packets; what is left in the buffer must not wait
        # for the socket to become readable again. It is handled without reading more, so
        # a call does paho's share of work plus at most one buffer: a flood of requests
        # cannot keep the event loop (publishing, keep-alive) waiting.
        try:
            rc = original_read(max_packets)
            reader.refill = False
            while rc == success and reader.pending:
                rc = original_read(max_packets)
            return rc
        finally:
            reader.refill = True
            send_acks()

    def take(command: int, data: Any, start: int, stop: int) -> bool:
        """Handle the packet ``data[start:stop]`` (its body) here if it is a PUBACK or a
        QoS 0/1 PUBLISH; False: paho's own code is to handle it."""
        kind = command & 0xF0
        if kind == PUBACK and stop - start == 2 and paho.on_publish is None:
            with lock:
                sent = out.pop((data[start] << 8) | data[start + 1], None)
                if sent is not None:
                    paho._inflight_messages -= 1
            if sent is not None:
                sent.info._set_as_published()  # a paho message's waiters, if any
            return True
        qos = (command >> 1) & 0x03
        if kind != PUBLISH or qos == 2 or paho._manual_ack or stop - start < 2:
            return False
        end = start + 2 + ((data[start] << 8) | data[start + 1])
        if end <= start + 2 or stop < end + 2 * qos:
            return False  # paho reports a malformed packet
        try:
            topic = str(data[start + 2:end], "utf-8")
        except UnicodeDecodeError:
            return False
        mid = 0
        if qos:
            mid = (data[end] << 8) | data[end + 1]
            end += 2
        try:
            handler(topic, bytes(data[end:stop]))
        except Exception:  # one bad message must never stop the service
            log.exception("handler failed for %s", topic)
        if qos:
            acks.extend((PUBACK, 2, mid >> 8, mid & 0xFF))
        return True

    def drain(data: bytes, pos: int) -> int:
        """Take the whole packets from ``data[pos:]`` that ``take`` handles; returns where
        the first one left (partial, or for paho) starts."""
        size = len(data)
        start = pos
        while pos < size:
            command = data[pos]
            if command & 0xF0 not in (PUBLISH, PUBACK):
                break
            i, length, shift = pos + 1, 0, 0
            while i < size and shift < 28:
                byte = data[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # the length runs past the buffer (or is malformed): paho's reading
            if i + length > size or not take(command, data, i, i + length):
                break
            pos = i + length
        if pos != start:
            paho._last_bytes_received = mqtt.time_func()  # paho's keep-alive reads it
        return pos

    def handle() -> Any:
        packet = paho._in_packet
        data = packet["packet"]
        if take(packet["command"], data, 0, len(data)):
            return success
        send_acks()  # acknowledged in the order the PUBLISHes came
        return original()

    reader = _Reader(paho, paho._sock_recv, drain)
    paho._packet_handle = handle
    paho._sock_recv = reader
    paho.loop_read = loop_read

    def undo() -> None:
        send_acks()
        reader.drain = None  # a reader kept for its unread bytes serves them to paho only
        reader.refill = True
        for name, ours in (("_packet_handle", handle), ("loop_read", loop_read),
                           ("_sock_recv", reader)):
            if paho.__dict__.get(name) is ours and not (ours is reader and reader.pending):
                delattr(paho, name)  # unread bytes keep the reader: they are the stream

    return undo
