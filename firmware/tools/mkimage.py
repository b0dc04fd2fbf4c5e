#!/usr/bin/env python3
"""Build a fleet-device host firmware image and print its SHA-256.

The host image format (little-endian; the same one firmware/core/image.c parses):

    bytes 0..7     magic b"FLTIMG01"
    bytes 8..39    version, ASCII, NUL padded
    bytes 40..71   crash_on_hw, ASCII, NUL padded: the app aborts during boot on
                   that hardware revision (a test hook for crash-loop rollbacks)
    bytes 72..75   payload length, uint32
    bytes 76..127  zero
    then the payload

The release manifest's sha256 is over the whole file. Standard library only.

    mkimage.py --version 2.3.0 [--crash-on-hw rev-b] [--payload-size N] -o out.bin
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
import sys

MAGIC = b"FLTIMG01"
HEADER_SIZE = 128
FIELD_LEN = 32


def _field(value: str, name: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) > FIELD_LEN:
        raise ValueError(f"{name} is longer than {FIELD_LEN} bytes")
    if any(b < 0x21 or b > 0x7E for b in raw):
        raise ValueError(f"{name} must be printable ASCII without spaces")
    return raw.ljust(FIELD_LEN, b"\0")


def build_image(version: str, crash_on_hw: str = "", payload: bytes = b"") -> bytes:
    """Return the bytes of a host image."""
    if not version:
        raise ValueError("version must not be empty")
    header = (
        MAGIC
        + _field(version, "version")
        + _field(crash_on_hw, "crash_on_hw")
        + struct.pack("<I", len(payload))
    )
    header = header.ljust(HEADER_SIZE, b"\0")
    return header + payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="firmware version in the header")
    parser.add_argument("--crash-on-hw", default="", help="hardware revision that crashes")
    parser.add_argument("--payload-size", type=int, default=4096, help="payload bytes")
    parser.add_argument("--seed", type=int, default=None,
                        help="payload RNG seed (default: derived from version)")
    parser.add_argument("-o", "--output", required=True, help="output file")
    args = parser.parse_args(argv)
    if args.payload_size < 0:
        parser.error("--payload-size must be >= 0")
    seed = args.seed if args.seed is not None else args.version
    payload = random.Random(seed).randbytes(args.payload_size)
    try:
        image = build_image(args.version, args.crash_on_hw, payload)
    except ValueError as exc:
        parser.error(str(exc))
    with open(args.output, "wb") as f:
        f.write(image)
    print(hashlib.sha256(image).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
