"""A small asyncio HTTP/1.1 GET for OTA downloads (aiohttp is not a dependency).

Follows up to 5 redirects, honours Content-Length and chunked transfer encoding, and
reports failures with the words the firmware's libcurl port uses ("HTTP 404",
"Couldn't connect to server", "Timeout was reached", ...), so ``ota_error`` reads the
same from the simulator and from the ``fleet-device`` binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from urllib.parse import urljoin, urlsplit

from fleet_tui.sim.protocol import OTA_MAX_IMAGE

MAX_REDIRECTS = 5
USER_AGENT = "fleet-device"


class DownloadError(Exception):
    """``str(err)`` is the reason, as curl would word it."""


async def http_get(url: str, *, bytes_per_s: float | None = None, fail_after: int | None = None,
                   timeout: float = 60.0, connect_timeout: float = 10.0,
                   max_size: int = OTA_MAX_IMAGE) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                status, location, body = await _get_once(
                    url, bytes_per_s, fail_after, connect_timeout, max_size)
                if status in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    continue
                if status >= 400:
                    raise DownloadError(f"HTTP {status}")
                return body
            raise DownloadError("Number of redirects hit maximum amount")
    except TimeoutError:
        raise DownloadError("Timeout was reached") from None


async def _get_once(url: str, bytes_per_s: float | None, fail_after: int | None,
                    connect_timeout: float, max_size: int) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError("Unsupported protocol")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    ctx = ssl.create_default_context() if parts.scheme == "https" else None
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ctx)
    except TimeoutError:
        raise DownloadError("Timeout was reached") from None
    except socket.gaierror:
        raise DownloadError("Couldn't resolve host name") from None
    except ssl.SSLError as err:
        raise DownloadError(f"SSL connect error: {err.reason}") from None
    except OSError:
        raise DownloadError("Couldn't connect to server") from None
    try:
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/") \
                or not status_parts[1].isdigit():
            raise DownloadError("Weird server reply")
        status = int(status_parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if status >= 300:
            return status, headers.get("location", ""), b""
        limiter = _Limiter(bytes_per_s, fail_after, max_size)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader, limiter)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise DownloadError("Weird server reply") from None
            if length > max_size:
                raise DownloadError(f"image larger than {max_size} bytes")
            body = await limiter.read(reader, length)
            if len(body) < length:
                raise DownloadError("Transferred a partial file")
        else:
            body = await limiter.read(reader, None)
        return status, "", body
    except asyncio.IncompleteReadError:
        raise DownloadError("Failure when receiving data from the peer") from None
    except asyncio.LimitOverrunError:
        raise DownloadError("Weird server reply") from None
    except (ConnectionError, OSError):
        raise DownloadError("Failure when receiving data from the peer") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class _Limiter:
    """Throttling and deliberate breakage for the slow/failing download profiles."""

    def __init__(self, bytes_per_s: float | None, fail_after: int | None, max_size: int) -> None:
        self.rate = bytes_per_s
        self.fail_after = fail_after
        self.max_size = max_size
        self.total = 0
        self.t0 = asyncio.get_running_loop().time()

    async def read(self, reader: asyncio.StreamReader, length: int | None) -> bytes:
        out = bytearray()
        chunk = 65536 if self.rate is None else max(64, int(self.rate / 4))
        while length is None or len(out) < length:
            want = chunk if length is None else min(chunk, length - len(out))
            data = await reader.read(want)
            if not data:
                break
            out += data
            await self.account(len(data))
        return bytes(out)

    async def account(self, n: int) -> None:
        self.total += n
        if self.total > self.max_size:
            raise DownloadError(f"image larger than {self.max_size} bytes")
        if self.fail_after is not None and self.total >= self.fail_after:
            raise DownloadError("Failure when receiving data from the peer")
        if self.rate:
            loop = asyncio.get_running_loop()
            ahead = self.t0 + self.total / self.rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def _read_chunked(reader: asyncio.StreamReader, limiter: _Limiter) -> bytes:
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise DownloadError("Weird server reply") from None
        if size == 0:
            with contextlib.suppress(asyncio.IncompleteReadError):
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
            return bytes(out)
        out += await limiter.read(reader, size)
        if len(out) > limiter.max_size:
            raise DownloadError(f"image larger than {limiter.max_size} bytes")
        await reader.readexactly(2)
