"""Device Shadow document semantics, wire-compatible with the AWS IoT Device Shadow service.

This module is pure: no I/O, no clock, no framework. The MQTT service decodes a request with
:func:`parse_request`, applies it with :meth:`ShadowDocument.apply_update` and publishes the
payloads of the returned :class:`ShadowUpdate`; any :class:`ShadowError` becomes an
``/rejected`` payload through :func:`error_payload`.

Semantics (AWS IoT Device Shadow, "Device Shadow service documents" and "Device Shadow error
messages" in the AWS IoT Core developer guide):

* ``state.desired`` / ``state.reported`` merge into the stored sections: objects merge
  recursively, arrays and scalars replace, ``null`` deletes a key (and its metadata), and
  ``"desired": null`` (or ``"reported": null``) clears the whole section. Objects left empty
  by deletions are removed, so an empty object is never stored. An object sent for a key that
  holds a scalar replaces the scalar (JSON Merge Patch, RFC 7386), then the empty-object rule
  applies.
* ``metadata`` mirrors each section with ``{"timestamp": T}`` at every leaf; arrays are leaves
  (they are values, replaced whole).
* ``version`` starts at 0 for a shadow that never accepted an update, becomes 1 on the first
  accepted update and grows by one on every accepted update, even one that changes nothing.
  A request ``version`` other than the current version is rejected 409.
* The delta is every desired leaf whose value differs from reported (recursive; a desired
  object against a reported non-object is the whole desired subtree; arrays compare whole).
  ``/update/delta`` is published only when the accepted request carried a ``desired`` object
  and the resulting delta is not empty, and it carries the whole delta, not only the keys the
  request touched.
* Limits (:class:`ShadowLimits`) are enforced on the document that *would* result, before it
  is accepted, so a stored document never exceeds them.

Trees handed out by this module (``desired``, ``delta()``, payload dicts) share structure with
the immutable document for speed: treat them as read-only and serialize them (:func:`dumps`);
:meth:`ShadowDocument.to_dict` returns a private deep copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "DEFAULT_LIMITS",
    "ShadowDocument",
    "ShadowError",
    "ShadowLimits",
    "ShadowUpdate",
    "dumps",
    "error_payload",
    "internal_error",
    "no_shadow_error",
    "parse_client_token",
    "parse_request",
    "too_many_requests_error",
    "validate_request",
]

Json = Any
"""A value decoded from JSON: dict, list, str, int, float, bool or None."""

# AWS's published error messages, verbatim, so clients that match on them keep working.
MSG_INVALID_JSON: Final = "Invalid JSON"
MSG_MISSING_STATE: Final = "Missing required node: state"
MSG_STATE_NOT_OBJECT: Final = "State node must be an object"
MSG_DESIRED_NOT_OBJECT: Final = "Desired node must be an object"
MSG_REPORTED_NOT_OBJECT: Final = "Reported node must be an object"
MSG_INVALID_VERSION: Final = "Invalid version"
MSG_INVALID_CLIENT_TOKEN: Final = "Invalid clientToken"
MSG_INVALID_NODE: Final = "State contains an invalid node"
MSG_VERSION_CONFLICT: Final = "Version conflict"
MSG_TOO_LARGE: Final = "The payload exceeds the maximum size allowed"
MSG_BAD_ENCODING: Final = "Unsupported documented encoding; supported encoding is UTF-8"
MSG_TOO_MANY_REQUESTS: Final = "Too Many Requests"
MSG_INTERNAL: Final = "Internal service failure"

_SECTION_ERRORS: Final = {"desired": MSG_DESIRED_NOT_OBJECT, "reported": MSG_REPORTED_NOT_OBJECT}
_SCALARS: Final = frozenset({str, int, bool})  # float is checked separately (finite only)
_NUMBERS: Final = frozenset({int, float})  # bool deliberately absent: true is not 1 in JSON


@dataclass(frozen=True, slots=True)
class ShadowLimits:
    """Service limits, defaulting to the ones AWS documents for the Device Shadow service.

    ``max_state_bytes``: serialized ``state`` (desired + reported, metadata not counted)
    after the update; beyond it an update is rejected 413. ``max_depth``: levels of nesting in
    the desired or reported section (the section object is level 1, arrays count as a level);
    beyond it 400. ``max_client_token``: UTF-8 bytes of ``clientToken``; beyond it 400.
    ``max_payload_bytes``: the raw request; beyond it 413 before it is even decoded.
    """

    max_state_bytes: int = 8192
    max_depth: int = 6
    max_client_token: int = 64
    max_payload_bytes: int = 128 * 1024

    def __post_init__(self) -> None:
        for name in ("max_state_bytes", "max_depth", "max_client_token", "max_payload_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ShadowLimits.{name} must be a positive integer, not {value!r}")

    @property
    def depth_message(self) -> str:
        """AWS's 400 message for too deep a document, with this limit in it."""
        return f"JSON contains too many levels of nesting; maximum is {self.max_depth}"


DEFAULT_LIMITS: Final = ShadowLimits()


class ShadowError(Exception):
    """A request the shadow service rejects: an HTTP-style ``code`` and AWS's ``message``.

    ``client_token`` is the request's token when one could be read, so the rejection can
    echo it.
    """

    def __init__(self, code: int, message: str, client_token: str | None = None) -> None:
        super().__init__(code, message, client_token)
        self.code = code
        self.message = message
        self.client_token = client_token

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    def __repr__(self) -> str:
        return f"ShadowError({self.code!r}, {self.message!r}, {self.client_token!r})"


def error_payload(err: ShadowError, now: int) -> dict[str, Json]:
    """The ``/rejected`` payload for ``err``: ``code``, ``message``, ``timestamp`` and
    ``clientToken`` (omitted when the request had none, as AWS does)."""
    payload: dict[str, Json] = {"code": err.code, "message": err.message, "timestamp": now}
    if err.client_token is not None:
        payload["clientToken"] = err.client_token
    return payload


def no_shadow_error(
    thing: str, name: str | None = None, client_token: str | None = None
) -> ShadowError:
    """404 for a get/delete of a shadow that does not exist (named or, with no ``name``,
    the classic shadow, which AWS reports by the thing's name)."""
    return ShadowError(404, f"No shadow exists with name: '{name or thing}'", client_token)


def too_many_requests_error(client_token: str | None = None) -> ShadowError:
    """429 for a request over the per-thing rate or in-flight limit."""
    return ShadowError(429, MSG_TOO_MANY_REQUESTS, client_token)


def internal_error(client_token: str | None = None) -> ShadowError:
    """500 for a failure of the service itself (storage, a bug), never of the request."""
    return ShadowError(500, MSG_INTERNAL, client_token)


def dumps(payload: Json) -> bytes:
    """Serialize a payload or document for the wire (compact UTF-8 JSON).

    Copied to its exact size: orjson's result keeps the 4 KiB buffer it was written in,
    and the payloads of a burst wait in batches (a 100k fan-out touched twice the memory
    and page faults, and ran 7% slower, with orjson's own bytes)."""
    return memoryview(orjson.dumps(payload)).tobytes()


def _decode(payload: bytes | bytearray | memoryview, limits: ShadowLimits) -> Json:
    if len(payload) > limits.max_payload_bytes:
        raise ShadowError(413, MSG_TOO_LARGE)
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    # orjson reports bad UTF-8 as a JSON error; AWS answers that case with its own 415.
    try:
        bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise ShadowError(415, MSG_BAD_ENCODING) from None
    raise ShadowError(400, MSG_INVALID_JSON)


def parse_request(
    payload: bytes | bytearray | memoryview, limits: ShadowLimits = DEFAULT_LIMITS
) -> dict[str, Json]:
    """Decode and validate an ``/update`` request.

    Returns ``{"state": {...}}`` plus ``"version"`` and ``"clientToken"`` when present; every
    other top-level field is ignored, as AWS ignores it. Raises :class:`ShadowError`: 413 for
    a payload over ``limits.max_payload_bytes``, 415 for bytes that are not UTF-8, 400 for
    anything malformed (see :func:`validate_request`). Errors after the token is read echo it.
    """
    request, depth = _validate(_decode(payload, limits), limits)
    return _Checked(request, limits, depth)


class _Checked(dict[str, Json]):
    """A request :func:`parse_request` validated against ``limits``: ``apply_update`` with
    the same limits need not walk it again. One request applied to many documents in the
    same second (a release's desired OTA state) also shares its metadata stamps."""

    __slots__ = ("depth", "limits", "stamped")

    def __init__(self, request: dict[str, Json], limits: ShadowLimits, depth: int) -> None:
        super().__init__(request)
        self.limits = limits
        self.depth = depth
        self.stamped: tuple[dict[str, Json], dict[str, Json]] | None = None


def parse_client_token(
    payload: bytes | bytearray | memoryview, limits: ShadowLimits = DEFAULT_LIMITS
) -> str | None:
    """The ``clientToken`` of a ``/get`` or ``/delete`` request (whose body is otherwise
    ignored); an empty body has none. Raises 400 for a body that is not a JSON object or
    carries an invalid token, and 413/415 as :func:`parse_request` does."""
    if not payload or not bytes(payload).strip():
        return None
    doc = _decode(payload, limits)
    if type(doc) is not dict:
        raise ShadowError(400, MSG_INVALID_JSON)
    return _client_token(doc, limits)


def validate_request(
    request: Mapping[str, Json], limits: ShadowLimits = DEFAULT_LIMITS
) -> dict[str, Json]:
    """Validate an already-decoded update request; returns it normalized like
    :func:`parse_request`.

    400s, in the order they are checked: a ``clientToken`` that is not a string or is longer
    than ``limits.max_client_token`` UTF-8 bytes; a ``version`` that is not a non-negative
    integer (booleans are not integers here); a missing ``state``; a ``state`` that is not an
    object or has a key other than ``desired``/``reported``; a section that is neither an
    object nor ``null``; nesting deeper than ``limits.max_depth``; an array with a ``null``
    element (AWS rejects those) or a value that JSON cannot carry.

    The result, applied with the same ``limits``, is not walked again: validate once a
    request that many documents take.
    """
    checked, depth = _validate(request, limits)
    return _Checked(checked, limits, depth)


def _client_token(doc: Mapping[str, Json], limits: ShadowLimits) -> str | None:
    token = doc.get("clientToken")
    if token is None and "clientToken" not in doc:
        return None
    # An invalid token is not echoed: the error is about the token itself.
    if type(token) is not str or len(token.encode()) > limits.max_client_token:
        raise ShadowError(400, MSG_INVALID_CLIENT_TOKEN)
    return token


def _validate(doc: Json, limits: ShadowLimits) -> tuple[dict[str, Json], int]:
    """Validate a request; returns it normalized and the depth of its deepest section."""
    if not isinstance(doc, Mapping):
        raise ShadowError(400, MSG_INVALID_JSON)
    token = _client_token(doc, limits)
    out: dict[str, Json] = {}
    if "version" in doc:
        version = doc["version"]
        if type(version) is not int or version < 0:
            raise ShadowError(400, MSG_INVALID_VERSION, token)
        out["version"] = version
    if "state" not in doc:
        raise ShadowError(400, MSG_MISSING_STATE, token)
    state = doc["state"]
    if type(state) is not dict:
        raise ShadowError(400, MSG_STATE_NOT_OBJECT, token)
    depth = 0
    for key, section in state.items():
        message = _SECTION_ERRORS.get(key)
        if message is None:
            raise ShadowError(400, MSG_INVALID_NODE, token)
        if section is None:
            continue
        if type(section) is not dict:
            raise ShadowError(400, message, token)
        try:
            depth = max(depth, _check_tree(section, 1, limits.max_depth))
        except _TreeError as exc:
            raise ShadowError(400, exc.message or limits.depth_message, token) from None
    out["state"] = state
    if token is not None:
        out["clientToken"] = token
    return out, depth


class _TreeError(Exception):
    """Why a request tree is invalid (``message`` None: too deep, the limit's message)."""

    def __init__(self, message: str | None) -> None:
        super().__init__(message)
        self.message = message


def _check_tree(node: dict | list, level: int, max_depth: int) -> int:
    """Depth of ``node``, which sits at nesting ``level``; raises :class:`_TreeError`.

    Stops descending as soon as the depth limit is passed, so a hostile payload costs no
    more than a legal one.
    """
    if level > max_depth:
        raise _TreeError(None)
    deepest = level
    values: Any
    if type(node) is dict:
        for key in node:
            if type(key) is not str:
                raise _TreeError(MSG_INVALID_NODE)
        values = node.values()
    else:
        values = node
    for value in values:
        kind = type(value)
        if kind is dict or kind is list:
            sub = _check_tree(value, level + 1, max_depth)
            if sub > deepest:
                deepest = sub
        elif kind in _SCALARS:
            continue
        elif kind is float:
            if not math.isfinite(value):
                raise _TreeError(MSG_INVALID_NODE)
        elif value is None:
            # null deletes a key in an object; in an array it has no meaning and AWS refuses it.
            if type(node) is list:
                raise _TreeError(MSG_INVALID_NODE)
        else:
            raise _TreeError(MSG_INVALID_NODE)
    return deepest


def _tree_depth(node: dict | list) -> int:
    """Exact nesting depth of a stored container (the container itself is one level)."""
    deepest = 0
    for value in node.values() if type(node) is dict else node:
        if type(value) is dict or type(value) is list:
            deepest = max(deepest, _tree_depth(value))
    return deepest + 1


def _section_depth(section: dict) -> int:
    return _tree_depth(section) if section else 0


def _copy(value: Json) -> Json:
    """Deep copy of a JSON value (only containers need copying; scalars are immutable)."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    return value


def _same(a: Json, b: Json) -> bool:
    """JSON equality: numbers compare by value (``25 == 25.0``, which firmware JSON libraries
    print either way) but a boolean never equals a number, unlike in Python."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is dict:
            return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
        if ta is list:
            return len(a) == len(b) and all(map(_same, a, b))
        return bool(a == b)
    return ta in _NUMBERS and tb in _NUMBERS and bool(a == b)


def _merge(
    old: dict, old_meta: dict, patch: dict, stamp: dict
) -> tuple[dict[str, Json], dict[str, Json]]:
    """Merge ``patch`` into a section, copy-on-write: only the paths the patch touches are
    copied, untouched subtrees are shared with the previous (immutable) document."""
    new = old.copy()
    meta = old_meta.copy()
    for key, value in patch.items():
        if value is None:
            if key in new:
                del new[key]
                meta.pop(key, None)
        elif type(value) is dict:
            current = new.get(key)
            if type(current) is dict:
                sub, sub_meta = _merge(current, meta.get(key) or {}, value, stamp)
            else:
                sub, sub_meta = _merge({}, {}, value, stamp)
            if sub:
                new[key] = sub
                meta[key] = sub_meta
            elif key in new:
                del new[key]
                meta.pop(key, None)
        else:
            # Lists are copied so the stored document never shares a mutable with the caller.
            new[key] = _copy(value) if type(value) is list else value
            meta[key] = stamp
    return new, meta


def _stamp_tree(patch: dict, stamp: dict) -> dict[str, Json]:
    """Metadata for an ``/update/accepted`` payload: every leaf the request touched,
    deletions (``null``) included, carries the update's timestamp."""
    return {
        key: _stamp_tree(value, stamp) if type(value) is dict else stamp
        for key, value in patch.items()
    }


def _delta(
    desired: dict, reported: dict, desired_meta: dict
) -> tuple[dict[str, Json], dict[str, Json]]:
    delta: dict[str, Json] = {}
    meta: dict[str, Json] = {}
    for key, want in desired.items():
        if key in reported:
            have = reported[key]
            if type(want) is dict:
                if type(have) is dict:
                    sub, sub_meta = _delta(want, have, desired_meta.get(key) or {})
                    if sub:
                        delta[key] = sub
                        meta[key] = sub_meta
                    continue
            elif _same(want, have):
                continue
        delta[key] = want
        if key in desired_meta:
            meta[key] = desired_meta[key]
    return delta, meta


def _prune(desired: dict, desired_meta: dict, reported: dict) -> tuple[dict, dict]:
    """Desired without the keys whose value reported already has (opt-in convergence)."""
    out: dict[str, Json] = {}
    meta: dict[str, Json] = {}
    for key, want in desired.items():
        if key in reported:
            have = reported[key]
            if type(want) is dict and type(have) is dict:
                sub, sub_meta = _prune(want, desired_meta.get(key) or {}, have)
                if sub:
                    out[key] = sub
                    meta[key] = sub_meta
                continue
            if _same(want, have):
                continue
        out[key] = want
        if key in desired_meta:
            meta[key] = desired_meta[key]
    return out, meta


def _sections(desired: dict, reported: dict) -> dict[str, Json]:
    """A ``state`` or ``metadata`` node with its empty sections left out, as AWS shows it."""
    node: dict[str, Json] = {}
    if desired:
        node["desired"] = desired
    if reported:
        node["reported"] = reported
    return node


def stored_in_sync(data: Mapping[str, Json]) -> bool:
    """Whether a stored document (:meth:`ShadowDocument.to_dict`, or a ``current`` of
    ``/update/documents``) has converged: its delta is empty. Reads without copying."""
    state = data.get("state")
    if type(state) is not dict:
        return True
    desired = state.get("desired")
    if type(desired) is not dict or not desired:
        return True
    reported = state.get("reported")
    return not _delta(desired, reported if type(reported) is dict else {}, {})[0]


@dataclass(slots=True)  # not frozen: one per update, and its __init__ costs a setattr per field
class ShadowUpdate:
    """The outcome of an accepted update: the new document and the payloads to publish.

    ``accepted`` goes to ``/update/accepted``, ``delta`` (``None`` when nothing is to be
    published) to ``/update/delta``, ``documents`` to ``/update/documents``. Read-only.
    """

    document: ShadowDocument
    accepted: dict[str, Json]
    delta: dict[str, Json] | None
    documents: dict[str, Json]


class ShadowDocument:
    """One shadow (classic or named): desired, reported, their metadata, version, timestamp.

    Immutable: :meth:`apply_update` returns a new document and leaves this one as it was, so
    the service can swap documents atomically and a rejected update changes nothing.
    """

    __slots__ = (
        "_delta_cache",
        "_depth",
        "_desired",
        "_desired_meta",
        "_reported",
        "_reported_meta",
        "_size",
        "_timestamp",
        "_version",
    )

    def __init__(
        self,
        *,
        desired: dict[str, Json] | None = None,
        reported: dict[str, Json] | None = None,
        desired_metadata: dict[str, Json] | None = None,
        reported_metadata: dict[str, Json] | None = None,
        version: int = 0,
        timestamp: int = 0,
    ) -> None:
        """A document from its parts, taken as they are (no copy, no validation): build one
        with :meth:`empty` or :meth:`from_dict` unless the parts come from this module."""
        self._desired: dict[str, Json] = desired or {}
        self._reported: dict[str, Json] = reported or {}
        self._desired_meta: dict[str, Json] = desired_metadata or {}
        self._reported_meta: dict[str, Json] = reported_metadata or {}
        self._version = version
        self._timestamp = timestamp
        # Upper bound of the nesting depth, or None until needed: kept so that the depth
        # limit costs nothing per update (a merge cannot nest deeper than its inputs).
        self._depth: int | None = None
        # Upper bound of the state's serialized size, or None until needed (see
        # apply_update: the state is not serialized per update to check the size limit).
        self._size: int | None = None
        self._delta_cache: tuple[dict[str, Json], dict[str, Json]] | None = None

    @classmethod
    def empty(cls, version: int = 0) -> ShadowDocument:
        """A shadow with no state. ``version`` carries over a deleted shadow's version, since
        AWS continues numbering after a delete rather than restarting."""
        return cls(version=version)

    # ---- read access -------------------------------------------------------------------

    @property
    def desired(self) -> dict[str, Json]:
        """The desired section (read-only view)."""
        return self._desired

    @property
    def reported(self) -> dict[str, Json]:
        """The reported section (read-only view)."""
        return self._reported

    @property
    def metadata(self) -> dict[str, Json]:
        """``{"desired": ..., "reported": ...}`` timestamps, empty sections left out."""
        return _sections(self._desired_meta, self._reported_meta)

    @property
    def state(self) -> dict[str, Json]:
        """``{"desired": ..., "reported": ...}``, empty sections left out."""
        return _sections(self._desired, self._reported)

    @property
    def version(self) -> int:
        """0 before the first accepted update, then +1 per accepted update."""
        return self._version

    @property
    def timestamp(self) -> int:
        """Epoch seconds of the last accepted update (0 if none)."""
        return self._timestamp

    def _delta_pair(self) -> tuple[dict[str, Json], dict[str, Json]]:
        if self._delta_cache is None:
            if self._desired and self._reported:
                self._delta_cache = _delta(self._desired, self._reported, self._desired_meta)
            else:
                self._delta_cache = (self._desired, self._desired_meta)
        return self._delta_cache

    def delta(self) -> dict[str, Json]:
        """Desired leaves whose value differs from reported (or that reported lacks),
        recursively; read-only."""
        return self._delta_pair()[0]

    def delta_metadata(self) -> dict[str, Json]:
        """The desired metadata of exactly the leaves in :meth:`delta`; read-only."""
        return self._delta_pair()[1]

    @property
    def in_sync(self) -> bool:
        """True when the device has converged: the delta is empty."""
        return not self._delta_pair()[0]

    def _snapshot(self) -> dict[str, Json]:
        return {
            "state": _sections(self._desired, self._reported),
            "metadata": _sections(self._desired_meta, self._reported_meta),
            "version": self._version,
        }

    def _state_size(self) -> int:
        if self._size is None:
            self._size = len(orjson.dumps(_sections(self._desired, self._reported)))
        return self._size

    def _depth_bound(self) -> int:
        if self._depth is None:
            self._depth = max(_section_depth(self._desired), _section_depth(self._reported))
        return self._depth

    # ---- update ------------------------------------------------------------------------

    def apply_update(
        self,
        request: Mapping[str, Json],
        now: int,
        limits: ShadowLimits = DEFAULT_LIMITS,
        *,
        prune_converged_desired: bool = False,
    ) -> ShadowUpdate:
        """Apply an ``/update`` request (from :func:`parse_request`, or any dict of the same
        shape, which is validated again) at epoch second ``now``.

        Returns the new document and the payloads to publish; this document is unchanged.
        Raises :class:`ShadowError` (echoing the request's ``clientToken``): 400 for a
        malformed request or a result nested deeper than ``limits.max_depth``, 409 when the
        request's ``version`` is not the current version, 413 when the resulting state would
        exceed ``limits.max_state_bytes``.

        With ``prune_converged_desired`` the desired keys that reported now matches are
        dropped from the stored document (off by default: AWS keeps desired state).
        """
        req: dict[str, Json]
        stamp: dict[str, Json] | None = None
        if type(request) is _Checked and request.limits is limits:
            req, request_depth = request, request.depth
            if request.stamped is not None and request.stamped[0]["timestamp"] == now:
                stamp, stamp_tree = request.stamped
        else:
            req, request_depth = _validate(request, limits)
        token: str | None = req.get("clientToken")
        if "version" in req and req["version"] != self._version:
            raise ShadowError(409, MSG_VERSION_CONFLICT, token)

        state: dict[str, Json] = req["state"]
        if stamp is None:
            stamp = {"timestamp": now}  # one shared leaf: metadata is read-only by contract
            stamp_tree = _stamp_tree(state, stamp)
            if type(request) is _Checked:
                request.stamped = (stamp, stamp_tree)
        desired, desired_meta = self._desired, self._desired_meta
        reported, reported_meta = self._reported, self._reported_meta
        if "desired" in state:
            patch = state["desired"]
            if patch is None:
                desired, desired_meta = {}, {}
            else:
                desired, desired_meta = _merge(desired, desired_meta, patch, stamp)
        if "reported" in state:
            patch = state["reported"]
            if patch is None:
                reported, reported_meta = {}, {}
            else:
                reported, reported_meta = _merge(reported, reported_meta, patch, stamp)
        if prune_converged_desired and desired and reported:
            desired, desired_meta = _prune(desired, desired_meta, reported)

        # A merge adds at most the request's own size to the state's (each new key's comma
        # is paid for by the request's braces and commas; deletes and pruning only shrink),
        # so the result is serialized, cold in memory, only when that bound is over the
        # limit; the bound carries on as the new document's.
        try:
            size = self._state_size() + len(orjson.dumps(state))
            if size > limits.max_state_bytes:
                size = len(orjson.dumps(_sections(desired, reported)))
        except orjson.JSONEncodeError:
            # Only reachable with a hand-built request (e.g. an int beyond 64 bits): the
            # decoder never produces what the encoder refuses.
            raise ShadowError(400, MSG_INVALID_NODE, token) from None
        if size > limits.max_state_bytes:
            raise ShadowError(413, MSG_TOO_LARGE, token)
        # Merging cannot nest deeper than the old document or the request did, so the exact
        # (costly) walk is only needed when that bound is over the limit, e.g. after the
        # limit was lowered under a stored document.
        depth = max(request_depth, self._depth_bound())
        if depth > limits.max_depth:
            depth = max(_section_depth(desired), _section_depth(reported))
            if depth > limits.max_depth:
                raise ShadowError(400, limits.depth_message, token)

        new = ShadowDocument(
            desired=desired,
            reported=reported,
            desired_metadata=desired_meta,
            reported_metadata=reported_meta,
            version=self._version + 1,
            timestamp=now,
        )
        new._depth = depth
        new._size = size

        accepted: dict[str, Json] = {
            "state": state,
            "metadata": stamp_tree,
            "version": new._version,
            "timestamp": now,
        }
        delta_payload: dict[str, Json] | None = None
        if type(state.get("desired")) is dict:
            delta, delta_meta = new._delta_pair()
            if delta:
                delta_payload = {
                    "version": new._version,
                    "timestamp": now,
                    "state": delta,
                    "metadata": delta_meta,
                }
        documents: dict[str, Json] = {
            "previous": self._snapshot(),
            "current": new._snapshot(),
            "timestamp": now,
        }
        if token is not None:
            accepted["clientToken"] = token
            documents["clientToken"] = token
            if delta_payload is not None:
                delta_payload["clientToken"] = token
        return ShadowUpdate(new, accepted, delta_payload, documents)

    # ---- get / delete ------------------------------------------------------------------

    def get_response(
        self, client_token: str | None = None, now: int | None = None
    ) -> dict[str, Json]:
        """The ``/get/accepted`` payload: state (desired, reported and, when not empty,
        delta), metadata, version, timestamp (``now``, or the last update's time) and the
        request's clientToken."""
        state = _sections(self._desired, self._reported)
        delta = self._delta_pair()[0]
        if delta:
            state["delta"] = delta
        payload: dict[str, Json] = {
            "state": state,
            "metadata": _sections(self._desired_meta, self._reported_meta),
            "version": self._version,
            "timestamp": self._timestamp if now is None else now,
        }
        if client_token is not None:
            payload["clientToken"] = client_token
        return payload

    def delete_response(self, client_token: str | None, now: int) -> dict[str, Json]:
        """The ``/delete/accepted`` payload: the deleted document's version, ``now``, and the
        request's clientToken. Keep ``ShadowDocument.empty(self.version)`` to continue the
        numbering if the shadow is created again."""
        payload: dict[str, Json] = {"version": self._version, "timestamp": now}
        if client_token is not None:
            payload["clientToken"] = client_token
        return payload

    # ---- storage -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Json]:
        """A private deep copy for storage: ``{"state": {...}, "metadata": {...},
        "version": v, "timestamp": t}`` with empty sections left out."""
        return {
            "state": _copy(_sections(self._desired, self._reported)),
            "metadata": _copy(_sections(self._desired_meta, self._reported_meta)),
            "version": self._version,
            "timestamp": self._timestamp,
        }

    def to_json(self, **extra: Json) -> bytes:
        """:meth:`to_dict` serialized (with ``extra`` keys), without the intermediate copy."""
        return dumps(
            {
                "state": _sections(self._desired, self._reported),
                "metadata": _sections(self._desired_meta, self._reported_meta),
                "version": self._version,
                "timestamp": self._timestamp,
                **extra,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> ShadowDocument:
        """Rebuild a document stored with :meth:`to_dict` (deep-copied, so ``data`` stays the
        caller's). Raises ``ValueError`` for data of the wrong shape."""
        state = data.get("state", {})
        metadata = data.get("metadata", {})
        version = data.get("version", 0)
        timestamp = data.get("timestamp", 0)
        if type(state) is not dict or type(metadata) is not dict:
            raise ValueError("shadow document: state and metadata must be objects")
        if type(version) is not int or version < 0 or type(timestamp) is not int:
            raise ValueError("shadow document: version and timestamp must be integers")
        parts: dict[str, dict[str, Json]] = {}
        for node, name in ((state, "state"), (metadata, "metadata")):
            if not set(node) <= {"desired", "reported"}:
                raise ValueError(f"shadow document: unexpected key in {name}")
            for section in ("desired", "reported"):
                value = node.get(section, {})
                if type(value) is not dict:
                    raise ValueError(f"shadow document: {name}.{section} must be an object")
                parts[f"{name}.{section}"] = _copy(value)
        return cls(
            desired=parts["state.desired"],
            reported=parts["state.reported"],
            desired_metadata=parts["metadata.desired"],
            reported_metadata=parts["metadata.reported"],
            version=version,
            timestamp=timestamp,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> ShadowDocument:
        """Rebuild a document stored with :meth:`to_json`."""
        return cls.from_dict(orjson.loads(data))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShadowDocument):
            return NotImplemented
        return (
            self._version == other._version
            and self._timestamp == other._timestamp
            and _same(self._desired, other._desired)
            and _same(self._reported, other._reported)
            and _same(self._desired_meta, other._desired_meta)
            and _same(self._reported_meta, other._reported_meta)
        )

    __hash__ = None  # type: ignore[assignment]  # equal by content, and not hashable

    def __repr__(self) -> str:
        return (
            f"ShadowDocument(version={self._version}, timestamp={self._timestamp}, "
            f"desired={self._desired!r}, reported={self._reported!r})"
        )
