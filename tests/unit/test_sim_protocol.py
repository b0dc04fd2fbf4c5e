"""Simulator building blocks: firmware rules ported to Python, profiles, MQTT framing, HTTP."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_tui.domain.firmware_image import FirmwareImage
from fleet_tui.sim.http import DownloadError, http_get
from fleet_tui.sim.mqtt_lite import MqttClient, connect_packet, publish_packet
from fleet_tui.sim.profiles import DeviceProfile, ProfileError, assign, parse_profiles
from fleet_tui.sim.protocol import (
    DocumentError,
    Topic,
    Topics,
    parse_delta,
    parse_document,
    parse_image_header,
    version_compare,
)

# ------------------------------------------------------------------------ versions


@pytest.mark.parametrize(("a", "b", "want"), [
    ("2.10.0", "2.9.1", 1),
    ("2.3", "2.3.0", 0),
    ("v2.3.0", "2.3.0", 0),
    ("2.3.0-rc1", "2.3.0", -1),
    ("2.3.0-rc1", "2.3.0-rc2", -1),
    ("2.3.0-rc", "2.3.0-rc1", -1),
    ("2.3.0+build5", "2.3.0", 0),
    ("garbage", "1.0.0", 1),
    ("abc", "abd", -1),
    ("1.2.3.4.5.6.7.8", "1.2.3.4.5.6.7.9", -1),
    ("1.2.3.4.5.6.7.8.9", "1.0", 1),  # nine components: not a version
])
def test_version_compare_like_the_firmware(a: str, b: str, want: int) -> None:
    assert version_compare(a, b) == want
    assert version_compare(b, a) == -want


@given(st.text(alphabet="0123456789.-+vrc", max_size=12),
       st.text(alphabet="0123456789.-+vrc", max_size=12))
def test_version_compare_is_antisymmetric(a: str, b: str) -> None:
    assert version_compare(a, b) == -version_compare(b, a)


# ----------------------------------------------------------------------- documents


def test_document_gate() -> None:
    assert parse_document(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    for bad, why in [(b"", "empty"), (b"x" * 40000, "too large"), (b"[1]", "not a JSON object"),
                     (b'{"a": "\xc0\xaf"}', "UTF-8"), (b"{'a': 1}", "malformed"),
                     (b'{"a":' * 17 + b"1" + b"}" * 17, "deeply")]:
        with pytest.raises(DocumentError, match=why):
            parse_document(bad)
    # brackets inside strings do not count as nesting
    assert parse_document(b'{"a": "' + b"[" * 40 + b'"}')


def test_delta_parser_error_text_is_bounded() -> None:
    state = {f"key_{i}_" + "x" * 60: 1 for i in range(20)}
    d = parse_delta(state)
    assert d.rejected_count == 20 and len(d.rejected) == 8
    assert all(len(k) == 48 for k in d.rejected)
    assert len(d.config_error) <= 200


def test_image_header_rules() -> None:
    good = FirmwareImage.build("2.4.0", "rev-b").to_bytes()
    header = parse_image_header(good)
    assert header is not None and (header.version, header.crash_on_hw) == ("2.4.0", "rev-b")
    assert parse_image_header(good[:100]) is None
    assert parse_image_header(b"X" + good[1:]) is None
    assert parse_image_header(good[:8] + b"\0" * 32 + good[40:]) is None  # empty version
    assert parse_image_header(good[:8] + b"2.4\x00x" + good[13:]) is None  # junk after NUL


def test_topics_parse() -> None:
    t = Topics("dev-1", "things", "fl")
    assert t.parse("things/dev-1/shadow/update/delta") == (Topic.SHADOW_DELTA, "")
    assert t.parse("things/dev-1/jobs/job_9/update/accepted") == (
        Topic.JOBS_UPDATE_ACCEPTED, "job_9")
    assert t.parse("things/dev-1/jobs/bad.id/update/accepted")[0] is Topic.UNKNOWN
    assert t.parse("things/dev-2/shadow/update/delta")[0] is Topic.UNKNOWN
    assert t.parse("things/dev-1/shadow/update")[0] is Topic.UNKNOWN  # our own, not inbound
    assert t.build(Topic.TELEMETRY) == "fl/dev-1/telemetry"
    assert t.build(Topic.JOBS_UPDATE, "j1") == "things/dev-1/jobs/j1/update"


# ------------------------------------------------------------------------ profiles


def test_profile_parsing() -> None:
    specs = parse_profiles(["flaky:0.02", "bad-sensor:0.01", "crash-loop=2.4.1/rev-c:0.5",
                            "slow-download=100"])
    assert [(s.name, s.share, s.param) for s in specs] == [
        ("flaky", 0.02, None), ("bad-sensor", 0.01, None), ("crash-loop", 0.5, "2.4.1/rev-c"),
        ("slow-download", 1.0, "100")]
    assert parse_profiles(["none"]) == [] and parse_profiles(None) == []
    for bad in (["nope"], ["flaky:2"], ["flaky:x"], ["none", "flaky"], ["bad-sensor=3"],
                ["memory-leak=-1"]):
        with pytest.raises(ProfileError):
            parse_profiles(bad)


def test_profile_assignment_is_deterministic_and_respects_shares() -> None:
    specs = parse_profiles(["flaky:0.1", "memory-leak:0.5", "crash-loop=2.4.1/rev-c"])
    things = [f"esp32-{i:06d}" for i in range(4000)]
    first = [assign(specs, 7, t) for t in things]
    assert first == [assign(specs, 7, t) for t in things]
    counts: Counter[str] = Counter()
    for p in first:
        counts.update(p.names)
    assert 300 < counts["flaky"] < 500
    assert 1800 < counts["memory-leak"] < 2200
    assert counts["crash-loop"] == 4000
    assert first[0].crash_loop == ("2.4.1", "rev-c")
    # another profile does not reshuffle who is flaky
    more = parse_profiles(["bad-sensor:0.3", "flaky:0.1"])
    assert [assign(more, 7, t).flaky_mean_s is not None for t in things] == [
        p.flaky_mean_s is not None for p in first]
    # another seed is another fleet
    assert [assign(specs, 8, t) for t in things] != first


def test_crash_loop_profile_matching() -> None:
    assert DeviceProfile(crash_loop=(None, None)).crashes("1.0", "rev-a")
    assert DeviceProfile(crash_loop=("2.4.1", None)).crashes("2.4.1", "rev-a")
    assert not DeviceProfile(crash_loop=("2.4.1", "rev-c")).crashes("2.4.1", "rev-a")
    assert not DeviceProfile().crashes("2.4.1", "rev-a")


# ------------------------------------------------------------------------ MQTT framing


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_connect_packet_layout() -> None:
    from fleet_tui.sim.mqtt_lite import Will

    pkt = connect_packet("dev", 30, Will("fleet/dev/presence", b'{"state":"offline"}'))
    assert pkt[0] == 0x10
    assert pkt[2:10] == b"\x00\x04MQTT\x04" + bytes([0x02 | 0x04 | 0x08 | 0x20])
    assert pkt[10:12] == b"\x00\x1e"
    assert pkt.endswith(b'\x00\x13{"state":"offline"}')


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.binary(max_size=300),
                          st.sampled_from([0, 1])), min_size=1, max_size=8),
       st.lists(st.integers(1, 50), max_size=20))
def test_incoming_publishes_survive_any_segmentation(
        messages: list[tuple[str, bytes, int]], cuts: list[int]) -> None:
    got: list[tuple[str, bytes]] = []
    client = MqttClient("c", 30, lambda t, p: got.append((t, p)))
    transport = FakeTransport()
    client.connection_made(transport)
    stream = b"".join(publish_packet(t, p, q, packet_id=i + 1)
                      for i, (t, p, q) in enumerate(messages))
    pos = 0
    for cut in cuts:
        client.data_received(stream[pos:pos + cut])
        pos += cut
    client.data_received(stream[pos:])
    assert got == [(t, p) for t, p, _ in messages]
    pubacks = sum(1 for _, _, q in messages if q == 1)
    assert len(transport.written) == 4 * pubacks


def test_garbage_from_the_broker_closes_the_connection() -> None:
    client = MqttClient("c", 30, lambda t, p: None)
    transport = FakeTransport()
    client.connection_made(transport)
    client.data_received(b"\xf0\x00")  # reserved packet type
    assert transport.closed


# ---------------------------------------------------------------------------- HTTP


async def _serve(handler_bytes: bytes | None, *, chunked: bool = False,
                 status: int = 200) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = handler_bytes or b""
        if status == 302:
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /real\r\nContent-Length: 0\r\n\r\n")
        elif status != 200:
            writer.write(f"HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n\r\n".encode())
        elif chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 1000):
                part = body[i:i + 1000]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/firmware/x.bin"


async def test_http_get_content_length_and_chunked() -> None:
    body = FirmwareImage.build("2.3.0").to_bytes()
    for chunked in (False, True):
        server, url = await _serve(body, chunked=chunked)
        async with server:
            data = await http_get(url)
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(body).hexdigest()


async def test_http_get_errors_read_like_curl() -> None:
    server, url = await _serve(None, status=404)
    async with server:
        with pytest.raises(DownloadError, match=r"^HTTP 404$"):
            await http_get(url)
    with pytest.raises(DownloadError, match=r"^Couldn't connect to server$"):
        await http_get(url)  # the server is gone
    with pytest.raises(DownloadError, match=r"^Unsupported protocol$"):
        await http_get("ftp://127.0.0.1/x")


async def test_http_get_profiles_throttle_and_break() -> None:
    body = b"x" * 2000
    server, url = await _serve(body)
    async with server:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await http_get(url, bytes_per_s=4000) == body
        assert loop.time() - t0 >= 0.4
        with pytest.raises(DownloadError, match="Failure when receiving data from the peer"):
            await http_get(url, fail_after=1024)
        with pytest.raises(DownloadError, match="image larger than 1000 bytes"):
            await http_get(url, max_size=1000)


async def test_http_get_follows_redirects() -> None:
    server, url = await _serve(None, status=302)
    async with server:
        with pytest.raises(DownloadError, match="Number of redirects"):
            await http_get(url)
