"""Wire details shared with the firmware's portable core (``firmware/core``), ported 1:1.

Limits (``limits.h``), topic names (``topic.c``), the document gate (``document.c``),
version comparison (``version.c``), the host image header (``image.c``) and the shadow
delta parser (``shadow.c``). Kept free of I/O so the state machine and its tests use the
exact same rules as the C code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeGuard

import orjson

from fleet_tui.domain.firmware_image import HEADER_SIZE, MAGIC

THING_MAX = 128
PREFIX_MAX = 64
VERSION_MAX = 32
HW_REV_MAX = 32
LOCATION_MAX = 64
URL_MAX = 512
JOB_ID_MAX = 64
ERROR_MAX = 200
KEY_MAX = 48
REJECTED_MAX = 8
DOC_MAX_SIZE = 32 * 1024
DOC_MAX_DEPTH = 16
OTA_MAX_IMAGE = 16 * 1024 * 1024
TELEMETRY_MIN_S = 1
TELEMETRY_MAX_S = 86400

# The retry contract for the device's own shadow updates (``shadow.h``, docs/scale-out.md).
SHADOW_RETRY_DEFAULT_S = 5.0
SHADOW_RETRY_CAP_S = 60.0
SHADOW_ATTEMPTS_MAX = 5
SHADOW_RETRYABLE_CODES = frozenset({500, 429})

PRESENCE_OFFLINE = b'{"state":"offline"}'
RESET_REASONS = ("poweron", "sw_reboot", "panic", "ota_rollback")
OTA_STATUSES = ("idle", "downloading", "verifying", "applying", "failed")
OTA_KEYS = ("target_version", "ota_url", "ota_sha256")

_THING_RE = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX = frozenset("0123456789abcdefABCDEF")


def thing_name_is_valid(thing: str) -> bool:
    return _THING_RE.fullmatch(thing) is not None


def job_id_is_valid(job_id: object) -> TypeGuard[str]:
    return isinstance(job_id, str) and _JOB_ID_RE.fullmatch(job_id) is not None


# ----------------------------------------------------------------------------- topics


class Topic(IntEnum):
    UNKNOWN = 0
    SHADOW_UPDATE = 1
    SHADOW_GET = 2
    JOBS_START_NEXT = 3
    JOBS_UPDATE = 4
    PRESENCE = 5
    TELEMETRY = 6
    SHADOW_DELTA = 7
    SHADOW_UPDATE_ACCEPTED = 8
    SHADOW_UPDATE_REJECTED = 9
    SHADOW_GET_ACCEPTED = 10
    SHADOW_GET_REJECTED = 11
    JOBS_NOTIFY_NEXT = 12
    JOBS_START_NEXT_ACCEPTED = 13
    JOBS_START_NEXT_REJECTED = 14
    JOBS_UPDATE_ACCEPTED = 15
    JOBS_UPDATE_REJECTED = 16


_SUFFIX = {
    Topic.SHADOW_UPDATE: "shadow/update",
    Topic.SHADOW_GET: "shadow/get",
    Topic.JOBS_START_NEXT: "jobs/start-next",
    Topic.SHADOW_DELTA: "shadow/update/delta",
    Topic.SHADOW_UPDATE_ACCEPTED: "shadow/update/accepted",
    Topic.SHADOW_UPDATE_REJECTED: "shadow/update/rejected",
    Topic.SHADOW_GET_ACCEPTED: "shadow/get/accepted",
    Topic.SHADOW_GET_REJECTED: "shadow/get/rejected",
    Topic.JOBS_NOTIFY_NEXT: "jobs/notify-next",
    Topic.JOBS_START_NEXT_ACCEPTED: "jobs/start-next/accepted",
    Topic.JOBS_START_NEXT_REJECTED: "jobs/start-next/rejected",
}
#: The filters the device subscribes to (QoS 1), in the firmware's order.
SUBSCRIPTIONS = (
    Topic.SHADOW_DELTA,
    Topic.SHADOW_UPDATE_ACCEPTED,
    Topic.SHADOW_UPDATE_REJECTED,
    Topic.SHADOW_GET_ACCEPTED,
    Topic.SHADOW_GET_REJECTED,
    Topic.JOBS_NOTIFY_NEXT,
    Topic.JOBS_START_NEXT_ACCEPTED,
    Topic.JOBS_START_NEXT_REJECTED,
    Topic.JOBS_UPDATE_ACCEPTED,
    Topic.JOBS_UPDATE_REJECTED,
)


class Topics:
    """Topic names of one thing; ``parse`` classifies what the device receives."""

    __slots__ = ("_fixed", "base", "fleet_base", "shadow_prefix", "thing")

    def __init__(self, thing: str, shadow_prefix: str = "$aws/things",
                 fleet_prefix: str = "fleet") -> None:
        self.thing = thing
        self.shadow_prefix = shadow_prefix
        self.base = f"{shadow_prefix}/{thing}/"
        self.fleet_base = f"{fleet_prefix}/{thing}/"
        self._fixed: dict[str, Topic] | None = None

    def build(self, kind: Topic, job_id: str | None = None) -> str:
        if kind is Topic.PRESENCE:
            return self.fleet_base + "presence"
        if kind is Topic.TELEMETRY:
            return self.fleet_base + "telemetry"
        job = job_id if job_id is not None else "+"
        if kind is Topic.JOBS_UPDATE:
            if job_id is None:
                raise ValueError("jobs update needs a job id")
            return f"{self.base}jobs/{job}/update"
        if kind is Topic.JOBS_UPDATE_ACCEPTED:
            return f"{self.base}jobs/{job}/update/accepted"
        if kind is Topic.JOBS_UPDATE_REJECTED:
            return f"{self.base}jobs/{job}/update/rejected"
        return self.base + _SUFFIX[kind]

    def subscriptions(self) -> list[str]:
        return [self.build(kind) for kind in SUBSCRIPTIONS]

    def parse(self, topic: str) -> tuple[Topic, str]:
        """(kind, job id or "") of an incoming topic; UNKNOWN when it is not ours."""
        if not topic.startswith(self.base):
            return Topic.UNKNOWN, ""
        rest = topic[len(self.base):]
        if self._fixed is None:
            self._fixed = {
                _SUFFIX[k]: k for k in _SUFFIX
                if k not in (Topic.SHADOW_UPDATE, Topic.SHADOW_GET, Topic.JOBS_START_NEXT)
            }
        kind = self._fixed.get(rest)
        if kind is not None:
            return kind, ""
        if rest.startswith("jobs/"):
            job_id, sep, tail = rest[5:].partition("/")
            if not sep or not job_id_is_valid(job_id):
                return Topic.UNKNOWN, ""
            if tail == "update/accepted":
                return Topic.JOBS_UPDATE_ACCEPTED, job_id
            if tail == "update/rejected":
                return Topic.JOBS_UPDATE_REJECTED, job_id
        return Topic.UNKNOWN, ""


# ------------------------------------------------------------------- document gate


class DocumentError(ValueError):
    pass


def _depth_is_bounded(data: bytes, max_depth: int) -> bool:
    depth, in_string, i, n = 0, False, 0, len(data)
    while i < n:
        c = data[i]
        if in_string:
            if c == 0x5C:  # backslash: skip the escaped character
                i += 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x7B, 0x5B):
            depth += 1
            if depth > max_depth:
                return False
        elif c in (0x7D, 0x5D) and depth > 0:
            depth -= 1
        i += 1
    return True


def parse_document(payload: bytes) -> dict[str, Any]:
    """The firmware's gate: bounded size and depth, UTF-8 without NUL, a JSON object."""
    if not payload:
        raise DocumentError("empty document")
    if len(payload) > DOC_MAX_SIZE:
        raise DocumentError("document too large")
    if b"\0" in payload:
        raise DocumentError("document is not valid UTF-8")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("document is not valid UTF-8") from None
    if not _depth_is_bounded(payload, DOC_MAX_DEPTH):
        raise DocumentError("document nested too deeply")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise DocumentError("malformed JSON") from None
    if not isinstance(doc, dict):
        raise DocumentError("document is not a JSON object")
    return doc


def doc_string(obj: object, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def doc_object(obj: object, key: str) -> dict[str, Any] | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else None


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_number(value: float) -> int | float:
    """cJSON prints an integral double without a fraction; so do we."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


# ----------------------------------------------------------------------- versions


def _parse_numbers(s: str) -> tuple[list[int], str] | None:
    nums: list[int] = []
    i, n = 0, len(s)
    while True:
        start, v = i, 0
        while i < n and "0" <= s[i] <= "9":
            if v > 100_000_000:
                return None
            v = v * 10 + ord(s[i]) - 48
            i += 1
        if i == start or len(nums) == 8:
            return None
        nums.append(v)
        if i < n and s[i] == ".":
            i += 1
            continue
        break
    if i < n and s[i] not in "-+":
        return None
    return nums + [0] * (8 - len(nums)), s[i:]


def version_compare(a: str, b: str) -> int:
    """``fleet_version_compare``: numeric components, missing ones are 0, leading ``v``
    ignored, a prerelease sorts before its release, garbage after valid versions."""
    pa = a[1:] if a[:1] in ("v", "V") else a
    pb = b[1:] if b[:1] in ("v", "V") else b
    ra, rb = _parse_numbers(pa), _parse_numbers(pb)
    if ra is None or rb is None:
        if ra is not None:
            return -1
        if rb is not None:
            return 1
        ea, eb = a.encode(), b.encode()
        return (ea > eb) - (ea < eb)
    if ra[0] != rb[0]:
        return -1 if ra[0] < rb[0] else 1
    pre_a = ra[1][1:].split("+", 1)[0] if ra[1].startswith("-") else None
    pre_b = rb[1][1:].split("+", 1)[0] if rb[1].startswith("-") else None
    if pre_a is None or pre_b is None:
        if (pre_a is None) == (pre_b is None):
            return 0
        return 1 if pre_a is None else -1
    xa, xb = pre_a.encode(), pre_b.encode()
    return (xa > xb) - (xa < xb)


def version_is_valid(v: object) -> TypeGuard[str]:
    return (isinstance(v, str) and 0 < len(v) <= VERSION_MAX
            and all(0x20 < ord(c) < 0x7F and c not in '"\\' for c in v))


def sha256_hex_is_valid(s: object) -> TypeGuard[str]:
    return isinstance(s, str) and len(s) == 64 and all(c in _HEX for c in s)


def url_is_valid(url: object) -> TypeGuard[str]:
    if not isinstance(url, str):
        return False
    if url.startswith("http://"):
        rest = url[7:]
    elif url.startswith("https://"):
        rest = url[8:]
    else:
        return False
    if not rest or rest[0] == "/" or len(url) > URL_MAX:
        return False
    return all(0x20 < ord(c) < 0x7F for c in url)


def same_sha(a: str, b: str) -> bool:
    return len(a) == 64 and len(b) == 64 and a.lower() == b.lower()


# -------------------------------------------------------------------------- image


@dataclass(frozen=True, slots=True)
class ImageHeader:
    version: str
    crash_on_hw: str
    payload_len: int


def _read_field(raw: bytes) -> str | None:
    text, ended = [], False
    for c in raw:
        if c == 0:
            ended = True
        elif ended or c < 0x21 or c > 0x7E:
            return None
        else:
            text.append(chr(c))
    return "".join(text)


def parse_image_header(data: bytes) -> ImageHeader | None:
    """``fleet_image_parse_header``: None for a short buffer, bad magic or bad fields."""
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        return None
    version = _read_field(data[8:40])
    crash = _read_field(data[40:72])
    if not version or crash is None:
        return None
    return ImageHeader(version, crash, int.from_bytes(data[72:76], "little"))


# ------------------------------------------------------------------ shadow deltas


@dataclass
class OtaTarget:
    version: str = ""
    url: str = ""
    sha256: str = ""

    def is_empty(self) -> bool:
        return not (self.version or self.url or self.sha256)

    def copy(self) -> OtaTarget:
        return OtaTarget(self.version, self.url, self.sha256)


@dataclass
class Delta:
    """A delta (or a config_update job's config) sorted into what can be applied."""

    led_is_on: bool | None = None
    telemetry_interval_s: int | None = None
    target_version: str | None = None
    ota_url: str | None = None
    ota_sha256: str | None = None
    rejected: list[str] = field(default_factory=list)  # the first REJECTED_MAX names
    rejected_count: int = 0
    config_error: str = ""

    def reject(self, key: str, reason: str) -> None:
        short = key[:KEY_MAX]
        if self.rejected_count < REJECTED_MAX:
            self.rejected.append(short)
        self.rejected_count += 1
        used = len(self.config_error)
        room = ERROR_MAX + 1 - used
        if room > 1:
            text = f"{'; ' if used else ''}{short}: {reason}"
            self.config_error += text[:room - 1]

    @property
    def has_ota(self) -> bool:
        return (self.target_version is not None or self.ota_url is not None
                or self.ota_sha256 is not None)

    def rejected_joined(self) -> str:
        return ",".join(self.rejected)

    def merge_ota(self, target: OtaTarget) -> None:
        if self.target_version is not None:
            target.version = self.target_version
        if self.ota_url is not None:
            target.url = self.ota_url
        if self.ota_sha256 is not None:
            target.sha256 = self.ota_sha256


def _interval(value: object) -> int | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    v = float(value)
    if not TELEMETRY_MIN_S <= v <= TELEMETRY_MAX_S or not v.is_integer():
        return None
    return int(v)


def parse_delta(state: object, *, allow_ota: bool = True, refused: frozenset[str] = frozenset(),
                relative_urls: bool = False) -> Delta:
    """``fleet_shadow_parse_delta``. ``refused`` names keys this device treats as unknown
    (the strict-config profile); ``relative_urls`` accepts an ``ota_url`` without a scheme
    (resolved against the simulator's firmware base URL when downloading)."""
    out = Delta()
    if not isinstance(state, dict):
        return out
    for key, item in state.items():
        is_ota_key = key in OTA_KEYS
        if key in refused:
            out.reject(key, "unknown key")
        elif key == "led_is_on":
            if isinstance(item, bool):
                out.led_is_on = item
            else:
                out.reject(key, "expected true or false")
        elif key == "telemetry_interval_s":
            v = _interval(item)
            if v is not None:
                out.telemetry_interval_s = v
            else:
                out.reject(key, "expected an integer 1..86400")
        elif is_ota_key and not allow_ota:
            out.reject(key, "OTA keys are set through the shadow only")
        elif key == "target_version":
            if version_is_valid(item):
                out.target_version = item
            else:
                out.reject(key, "expected a version string")
        elif key == "ota_url":
            if url_is_valid(item) or (relative_urls and _relative_url_ok(item)):
                out.ota_url = item
            else:
                out.reject(key, "expected an http:// or https:// URL")
        elif key == "ota_sha256":
            if sha256_hex_is_valid(item):
                out.ota_sha256 = item
            else:
                out.reject(key, "expected 64 hex digits")
        else:
            out.reject(key, "unknown key")
    return out


def _relative_url_ok(url: object) -> TypeGuard[str]:
    return (isinstance(url, str) and 0 < len(url) <= URL_MAX and "://" not in url
            and all(0x20 < ord(c) < 0x7F for c in url))


# ------------------------------------------------------------------ retry contract


def shadow_retry_seed(thing: str) -> int:
    """``fleet_shadow_retry_seed``: FNV-1a (32-bit) of the thing's name."""
    h = 2166136261
    for byte in thing.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def shadow_retry_wait_s(base_s: float, attempt: int, seed: int = 0) -> float:
    """``fleet_shadow_retry_wait_ms``: how long attempt ``attempt`` (1-based) waits for its
    answer: ``base_s`` doubled per attempt, capped, then jittered into [w/2, w) by the
    device's ``seed``; in whole milliseconds, as the firmware computes it."""
    cap = int(SHADOW_RETRY_CAP_S * 1000)
    wait = min(round(base_s * 1000) if base_s > 0 else int(SHADOW_RETRY_DEFAULT_S * 1000),
               0xFFFFFFFF)
    for _ in range(1, attempt):
        if wait >= cap:
            break
        wait = cap if wait > cap // 2 else wait * 2
    wait = min(wait, cap)
    h = (seed ^ (attempt * 0x9E3779B1)) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    half = wait // 2
    return (half + (((wait - half) * (h & 0xFFFF)) >> 16)) / 1000


def rejection_is_retryable(code: object) -> bool:
    """``fleet_shadow_rejection_is_retryable``: 500 (the service failed) and 429."""
    return is_number(code) and int(code) in SHADOW_RETRYABLE_CODES  # type: ignore[call-overload]


def merge_reported(older: dict[str, Any], newer: dict[str, Any]) -> None:
    """``fleet_shadow_merge_reported``: a newer reported patch over an older queued one, as
    the shadow would apply them in turn (objects merge, anything else, null included,
    replaces)."""
    for key, value in newer.items():
        mine = older.get(key)
        if isinstance(mine, dict) and isinstance(value, dict):
            merge_reported(mine, value)
        else:
            older[key] = value
