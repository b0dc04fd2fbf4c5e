"""The host firmware image format shared with ``firmware/`` (the Linux port's "flash").

Little-endian, 128-byte header then the payload:
bytes 0-7 magic ``FLTIMG01``; 8-39 version (ASCII, NUL-padded); 40-71 ``crash_on_hw``
(a hardware revision on which this image crash-loops at boot, for failure drills; empty for
none); 72-75 payload length (uint32); 76-127 zero. A release's sha256 covers the whole file.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass

MAGIC = b"FLTIMG01"
HEADER_SIZE = 128
_HEADER = struct.Struct("<8s32s32sI52x")


class ImageError(ValueError):
    pass


@dataclass(frozen=True)
class FirmwareImage:
    version: str
    crash_on_hw: str = ""
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        for name, value in (("version", self.version), ("crash_on_hw", self.crash_on_hw)):
            if len(value.encode()) > 31:
                raise ImageError(f"{name} {value!r} is longer than 31 bytes")
        header = _HEADER.pack(
            MAGIC, self.version.encode(), self.crash_on_hw.encode(), len(self.payload)
        )
        return header + self.payload

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> FirmwareImage:
        if len(data) < HEADER_SIZE:
            raise ImageError(f"image is {len(data)} bytes, shorter than its header")
        magic, version, crash, length = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ImageError("bad image magic")
        if len(data) != HEADER_SIZE + length:
            raise ImageError(f"payload is {len(data) - HEADER_SIZE} bytes, header says {length}")
        return cls(
            version.rstrip(b"\0").decode(), crash.rstrip(b"\0").decode(), data[HEADER_SIZE:]
        )

    @classmethod
    def build(cls, version: str, crash_on_hw: str = "", payload_size: int = 4096,
              seed: int = 0) -> FirmwareImage:
        """A deterministic image (same inputs, same bytes, same sha256)."""
        rng = random.Random(f"{version}/{crash_on_hw}/{seed}")
        return cls(version, crash_on_hw, rng.randbytes(payload_size))
