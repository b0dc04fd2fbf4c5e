"""Firmware version parsing and comparison.

Versions compare as versions (``2.10.0 > 2.9.1``), not as strings. ``version_key`` maps a
version to a string whose byte order equals version order, so the registry can store it in
an indexed column and compare in SQL exactly as :func:`parse_version` compares in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache, total_ordering

_VERSION_RE = re.compile(
    r"^v?(?P<major>\d{1,6})(?:\.(?P<minor>\d{1,6}))?(?:\.(?P<patch>\d{1,6}))?"
    r"(?:-(?P<pre>[0-9A-Za-z.\-]{1,32}))?(?:\+[0-9A-Za-z.\-]{1,32})?$"
)


class VersionError(ValueError):
    """A value that was used as a version is not one."""


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str = ""

    @property
    def key(self) -> str:
        # A release sorts after its pre-releases: '~' (0x7E) is above every pre-release char.
        base = f"{self.major:06d}.{self.minor:06d}.{self.patch:06d}"
        return f"{base}-{self.pre}" if self.pre else f"{base}~"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key < other.key

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.pre}" if self.pre else core


def parse_version(text: str) -> Version:
    """Parse ``MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]`` (a leading ``v`` is allowed)."""
    if not isinstance(text, str):
        raise VersionError(f"{text!r} is not a version (expected e.g. 2.1.0)")
    return _parse(text)


@lru_cache(maxsize=4096)  # a fleet runs a handful of versions; the engine compares 100k
def _parse(text: str) -> Version:
    m = _VERSION_RE.match(text.strip())
    if m is None:
        raise VersionError(f"{text!r} is not a version (expected e.g. 2.1.0)")
    return Version(
        int(m["major"]), int(m["minor"] or 0), int(m["patch"] or 0), m["pre"] or ""
    )


def version_key(text: str | None) -> str | None:
    """The sortable key of ``text``, or None when it is not a version."""
    if text is None:
        return None
    try:
        return parse_version(text).key
    except VersionError:
        return None


def is_version_field(name: str) -> bool:
    """Fields whose values compare as versions in queries and capability checks."""
    return name == "firmware_version" or name.endswith("_version")
