"""The Device Shadow service: AWS IoT's shadow MQTT API over the in-memory documents.

Durability contract: documents live in memory and are written to the registry in batches
(one transaction every ``flush_interval_ms``, or per ``max_batch_docs`` documents in a
burst; a batch commits while the previous one's answers are published, and batches answer
in order). Every response of a batch (``/accepted``,
``/delta``, ``/documents``, ``/rejected`` and ``get`` answers) is held until that batch has
committed, so nothing is acknowledged before it is durable; a crash loses only requests not
yet answered, which the devices retry (their clientToken never got an answer). If a commit
fails, the batch and every later one (applied on top of it in memory) are undone: their
shadows go back to their last durable state and their requests are answered 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet_tui.config import ShadowSettings
from fleet_tui.domain.shadow import (
    ShadowDocument,
    ShadowError,
    ShadowLimits,
    dumps,
    error_payload,
    internal_error,
    no_shadow_error,
    parse_client_token,
    parse_request,
    too_many_requests_error,
    validate_request,
)
from fleet_tui.registry.leases import StaleOwner
from fleet_tui.registry.registry import Registry
from fleet_tui.service.events import EventBus, ShadowChanged, ShadowDeleted
from fleet_tui.service.outbox import Outgoing
from fleet_tui.service.partitions import Partitions, partition_of
from fleet_tui.service.topics import ShadowTopic, Topics, valid_shadow_name, valid_thing

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (thing, shadow name; "" = classic)
Publisher = Callable[[Sequence[Outgoing]], Awaitable[object]]


@dataclass(slots=True)
class Entry:
    doc: ShadowDocument
    exists: bool  # False after a delete: the version carries on, get answers 404
    # clientToken + request hash of the update that made this version (_retry_key): a
    # device's retry of it (its answer died with a worker) is answered, not applied twice.
    token: str | None = None

    def stored(self) -> dict[str, Any]:
        data = self.doc.to_dict()
        data["exists"] = self.exists
        if self.token is not None:
            data["lastToken"] = self.token
        return data

    def stored_json(self) -> bytes:
        """:meth:`stored` serialized: one orjson call instead of a deep copy on this
        thread and ``json.dumps`` in the commit thread."""
        if self.token is not None:
            return self.doc.to_json(exists=self.exists, lastToken=self.token)
        return self.doc.to_json(exists=self.exists)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Entry:
        exists = bool(data.get("exists", True))
        token = data.get("lastToken")
        doc = ShadowDocument.from_dict({k: v for k, v in data.items()
                                        if k not in ("exists", "lastToken")})
        return cls(doc, exists, token if isinstance(token, str) else None)


@dataclass
class _Batch:
    dirty: dict[Key, Entry | None] = field(default_factory=dict)  # key -> durable entry before
    out: list[Outgoing] = field(default_factory=list)
    documents: list[Outgoing] = field(default_factory=list)  # published after ``out``
    rejections_on_failure: list[tuple[str, str | None]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    inflight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reported: set[str] = field(default_factory=set)  # things whose reported state changed


def _retry_key(token: Any, request: dict[str, Any]) -> str:
    """Same clientToken and same request: a retry (a reused token with new state is not)."""
    body = orjson.dumps(request.get("state"), option=orjson.OPT_SORT_KEYS)
    return f"{zlib.crc32(body):08x}:{token}"


class ShadowService:
    """Applies shadow requests; see the module docstring for the durability contract."""

    def __init__(
        self,
        registry: Registry,
        topics: Topics,
        settings: ShadowSettings | None = None,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.topics = topics
        self.settings = settings or ShadowSettings()
        self.limits = ShadowLimits(
            max_state_bytes=self.settings.max_state_bytes,
            max_depth=self.settings.max_depth,
            max_client_token=self.settings.max_client_token,
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        self.events = events or EventBus()
        self.clock = clock
        self.shadows: dict[Key, Entry] = {}
        self._batch = _Batch()
        self._sealed: deque[_Batch] = deque()  # full batches waiting to commit, in order
        self._wakeup = asyncio.Event()
        self.stats = {"accepted": 0, "rejected": 0, "batches": 0, "failed_batches": 0,
                      "not_mine": 0, "forwarded": 0, "retries_answered": 0}
        # Scale-out (service/partitions.py): None = this worker answers every thing.
        self.partitions: Partitions | None = None
        self._forward: list[Outgoing] = []
        self._peeked: dict[str, tuple[float, ShadowDocument | None]] = {}
        self._flushing = False

    # ------------------------------------------------------------------ loading

    def load(self) -> int:
        """Read every stored document back (after a restart: versions and all)."""
        self.shadows.update(self.read_stored(None))
        return len(self.shadows)

    def read_stored(self, partitions: set[int] | None) -> dict[Key, Entry]:
        """The stored documents (of ``partitions`` only, when given); runs in a thread."""
        n = self.partitions.n if self.partitions is not None else 0
        out: dict[Key, Entry] = {}
        for thing, name, _version, data in self.registry.load_shadows():
            if partitions is not None and partition_of(thing, n) not in partitions:
                continue
            try:
                out[(thing, name)] = Entry.from_stored(data)
            except Exception:  # a damaged row must not keep the service from starting
                log.exception("cannot load shadow %s/%s; skipped", thing, name)
        return out

    async def take_partitions(self, partitions: set[int]) -> None:
        """This worker took these over: their stored documents replace whatever it held
        (versions carry on from the last owner's last commit)."""
        self.shadows.update(await asyncio.to_thread(self.read_stored, partitions))

    def drop_partitions(self, partitions: set[int]) -> None:
        """This worker lost these: forget their documents (the new owner loads them)."""
        assert self.partitions is not None
        n = self.partitions.n
        for key in [k for k in self.shadows if partition_of(k[0], n) in partitions]:
            del self.shadows[key]

    def owns(self, thing: str) -> bool:
        """This worker answers ``thing`` (it publishes its deltas)."""
        return self.partitions is None or self.partitions.owns(thing)

    def peek(self, thing: str) -> ShadowDocument | None:
        """The classic shadow of any thing, for the engine: this worker's own document, or
        another worker's as last stored (read through, cached for a second)."""
        if self.partitions is None or self.partitions.owns(thing):
            return self.document(thing)
        now = time.monotonic()
        hit = self._peeked.get(thing)
        if hit is not None and now - hit[0] < 1.0:
            return hit[1]
        data = self.registry.get_shadow(thing)
        doc = None
        if data is not None:
            entry = Entry.from_stored(data)
            doc = entry.doc if entry.exists else None
        if len(self._peeked) > 100_000:
            self._peeked.clear()
        self._peeked[thing] = (now, doc)
        return doc

    def document(self, thing: str, name: str = "") -> ShadowDocument | None:
        entry = self.shadows.get((thing, name))
        return entry.doc if entry is not None and entry.exists else None

    # ----------------------------------------------------------------- requests

    def handle(self, topic: ShadowTopic, payload: bytes) -> None:
        """Apply one request; its answers wait in the current batch until it commits."""
        now = int(self.clock())
        thing, name = topic.thing, topic.name
        if not self.owns(thing):
            self.stats["not_mine"] += 1  # another worker's thing (or one being taken over)
            return
        batch = self._batch
        self._wakeup.set()
        if not (valid_thing(thing) and valid_shadow_name(name)):
            # Answer on the topic it came from: the requester is listening there.
            err = ShadowError(400, "Invalid thing name or shadow name")
            self._reject(batch, topic, err, now)
            return
        token = None
        try:
            if topic.op == "update":
                request = parse_request(payload, self.limits)
                token = request.get("clientToken")
            else:
                token = parse_client_token(payload, self.limits)
            if batch.inflight[thing] >= self.settings.max_inflight_per_client:
                raise too_many_requests_error(token)
            batch.inflight[thing] += 1
            if topic.op == "update":
                self._update(batch, topic, request, now)
            elif topic.op == "get":
                self._get(batch, topic, token, now)
            else:
                self._delete(batch, topic, token, now)
        except ShadowError as err:
            if err.client_token is None and token is not None:
                err.client_token = token
            self._reject(batch, topic, err, now)

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        """``request`` validated once for :meth:`handle_internal` on many things (it is
        not walked again per thing). Raises ShadowError as a device's request would."""
        return validate_request(request, self.limits)

    def handle_internal(self, thing: str, request: dict[str, Any]) -> None:
        """An update of a classic shadow from inside the service (the job engine's desired
        OTA state): the path a device's request takes, less the JSON round trip, and with
        ``/update/accepted`` at QoS 0 since no requester waits for it (a fan-out to 100k
        things is three messages each; the QoS 1 acks were a third of the service's CPU).
        Another worker's thing: published to its update topic, its owner applies it."""
        if not self.owns(thing):
            self.stats["forwarded"] += 1
            self._forward.append(Outgoing(self.topics.shadow(thing, "", "update"),
                                          dumps(request)))
            self._wakeup.set()
            return
        now = int(self.clock())
        batch = self._batch
        self._wakeup.set()
        topic = ShadowTopic(thing, "", "update")
        try:
            self._update(batch, topic, request, now, accepted_qos=0, retry=False)
        except ShadowError as err:
            err.client_token = request.get("clientToken")
            self._reject(batch, topic, err, now)

    def _reject(self, batch: _Batch, topic: ShadowTopic, err: ShadowError, now: int) -> None:
        self.stats["rejected"] += 1
        out = self.topics.shadow(topic.thing, topic.name, topic.op, "rejected")
        batch.out.append(Outgoing(out, dumps(error_payload(err, now))))

    def _touch(self, batch: _Batch, key: Key) -> None:
        if key not in batch.dirty:
            before = self.shadows.get(key)
            batch.dirty[key] = Entry(before.doc, before.exists) if before else None

    def _update(self, batch: _Batch, topic: ShadowTopic, request: dict[str, Any], now: int,
                accepted_qos: int = 1, retry: bool = True) -> None:
        """``retry``: the request may be a device's retry of an update whose answer it never
        got (the engine's own writes are never resent that way: no retry key for them)."""
        key = (topic.thing, topic.name)
        entry = self.shadows.get(key)
        current = entry.doc if entry is not None else ShadowDocument.empty()
        token = request.get("clientToken")
        retry_key = _retry_key(token, request) if retry and token is not None else None
        if entry is not None and entry.exists and retry_key is not None \
                and entry.token == retry_key:
            self._answer_retry(batch, topic, entry, str(token), now)
            return
        if entry is not None and not entry.exists:
            current = ShadowDocument.empty(entry.doc.version)
        result = current.apply_update(
            request, now, self.limits,
            prune_converged_desired=self.settings.prune_converged_desired,
        )
        self._touch(batch, key)
        # The registry mirrors reported state: written when the update changes it, or
        # on the first write after a delete (the deleted document's mirror is cleared).
        if topic.name == "" and ("reported" in request["state"]
                                 or (entry is not None and not entry.exists)):
            batch.reported.add(topic.thing)
        self.shadows[key] = Entry(result.document, True, retry_key)
        self.stats["accepted"] += 1
        base = self.topics.shadow(topic.thing, topic.name, "update")
        out = batch.out
        out.append(Outgoing(f"{base}/accepted", dumps(result.accepted), accepted_qos))
        batch.rejections_on_failure.append((f"{base}/rejected", token))
        if result.delta is not None:
            out.append(Outgoing(f"{base}/delta", dumps(result.delta)))
        batch.documents.append(Outgoing(f"{base}/documents", dumps(result.documents), 0))
        batch.events.append(ShadowChanged(topic.thing, topic.name, result.documents))
        if len(batch.dirty) >= self.settings.max_batch_docs and batch is self._batch:
            self._sealed.append(batch)
            self._batch = _Batch()

    def _answer_retry(self, batch: _Batch, topic: ShadowTopic, entry: Entry, token: str,
                      now: int) -> None:
        """The retry of the update that made ``entry``'s version: accepted again with that
        version (the document as it is), nothing applied twice."""
        self.stats["retries_answered"] += 1
        doc = entry.doc.get_response(token, now)
        batch.out.append(Outgoing(self.topics.shadow(topic.thing, topic.name, "update",
                                                     "accepted"), dumps(doc)))
        batch.rejections_on_failure.append(
            (self.topics.shadow(topic.thing, topic.name, "update", "rejected"), token))

    def _get(self, batch: _Batch, topic: ShadowTopic, token: str | None, now: int) -> None:
        entry = self.shadows.get((topic.thing, topic.name))
        if entry is None or not entry.exists:
            raise no_shadow_error(topic.thing, topic.name or None, token)
        batch.out.append(Outgoing(self.topics.shadow(topic.thing, topic.name, "get", "accepted"),
                                  dumps(entry.doc.get_response(token, now))))
        batch.rejections_on_failure.append(
            (self.topics.shadow(topic.thing, topic.name, "get", "rejected"), token))

    def _delete(self, batch: _Batch, topic: ShadowTopic, token: str | None, now: int) -> None:
        key = (topic.thing, topic.name)
        entry = self.shadows.get(key)
        if entry is None or not entry.exists:
            raise no_shadow_error(topic.thing, topic.name or None, token)
        self._touch(batch, key)
        self.shadows[key] = Entry(ShadowDocument.empty(entry.doc.version), False)
        t = self.topics
        batch.out.append(Outgoing(t.shadow(topic.thing, topic.name, "delete", "accepted"),
                                  dumps(entry.doc.delete_response(token, now))))
        batch.rejections_on_failure.append(
            (t.shadow(topic.thing, topic.name, "delete", "rejected"), token))
        batch.events.append(ShadowDeleted(topic.thing, topic.name, entry.doc.version))

    # -------------------------------------------------------------------- flush

    def _next_batch(self) -> _Batch | None:
        """The oldest batch with answers waiting (sealed ones first), or None."""
        if self._sealed:
            return self._sealed.popleft()
        if not self._batch.out:
            return None
        batch, self._batch = self._batch, _Batch()
        return batch

    def _rows(self, batch: _Batch) -> tuple[list[tuple[str, str, int, bytes]],
                                            dict[str, dict[str, Any]]]:
        docs, reported = [], {}
        for key in batch.dirty:
            entry = self.shadows.get(key)
            if entry is None:  # its partition was lost meanwhile: the fence refuses it
                raise StaleOwner(f"{key[0]}: partition lost before its batch committed")
            docs.append((key[0], key[1], entry.doc.version, entry.stored_json()))
            # A desired-only write (a fan-out's OTA state) leaves the mirror as it was.
            if key[1] == "" and entry.exists and key[0] in batch.reported:
                reported[key[0]] = entry.doc.reported
        return docs, reported

    @property
    def busy(self) -> bool:
        """Answers are waiting: in a batch, or in a flush not yet published."""
        return self._flushing or bool(self._batch.out) or bool(self._sealed)

    async def flush(self, publish: Publisher) -> int:
        """Commit every waiting batch and publish its answers, in order: each batch commits
        while the previous one's answers go out. Returns messages published."""
        self._flushing = True
        sent = 0
        publishing: asyncio.Task[int] | None = None
        try:
            while True:
                if self._forward:
                    forward, self._forward = self._forward, []
                    await publish(forward)
                batch = self._next_batch()
                if batch is None:
                    break
                answers = await self._commit(batch)
                if publishing is not None:
                    previous, publishing = publishing, None
                    sent += await self._answered(previous)
                publishing = asyncio.create_task(self._answer(batch, answers, publish))
        finally:
            if publishing is not None:
                sent += await self._answered(publishing)
            self._flushing = False
        return sent

    async def _commit(self, batch: _Batch) -> list[Outgoing]:
        """Write the batch; returns what to publish: its answers, or if the commit failed a
        500 for each request of it and of every later batch (see _fail)."""
        if not batch.dirty:
            return batch.out + batch.documents
        fence = (self.partitions.fence(k[0] for k in batch.dirty)
                 if self.partitions is not None else None)
        try:
            docs, reported = self._rows(batch)
            # The commit runs in a thread so this loop keeps reading requests meanwhile.
            await asyncio.to_thread(self.registry.save_shadows, docs, reported, fence)
        except Exception:
            log.exception("shadow batch of %d documents failed to commit", len(batch.dirty))
            return self._fail(batch)
        self.stats["batches"] += 1
        return batch.out + batch.documents  # no requester waits for /documents

    def _fail(self, batch: _Batch) -> list[Outgoing]:
        """The batch did not commit. The batches after it (sealed, and the open one) were
        applied on top of it in memory, so they fail with it: every shadow they touched
        goes back to its durable state (newest batch first, so the oldest one's "before"
        is what stays) and each request that changed or read one is answered 500 (devices
        resend)."""
        failed = [batch, *self._sealed, *([self._batch] if self._batch.out else [])]
        self._sealed.clear()
        self._batch = _Batch()
        self.stats["failed_batches"] += len(failed)
        for b in reversed(failed):
            for key, before in b.dirty.items():
                if before is None:
                    self.shadows.pop(key, None)
                else:
                    self.shadows[key] = before
        batch.events.clear()
        now = int(self.clock())
        # Requests rejected on their own (400, 409, ...) changed nothing: still answered.
        return [m for b in failed for m in b.out if m.topic.endswith("/rejected")] + [
            Outgoing(topic, dumps(error_payload(internal_error(token), now)))
            for b in failed for topic, token in b.rejections_on_failure]

    @staticmethod
    async def _answered(task: asyncio.Task[int]) -> int:
        """A batch's publishing, done; one that failed must not keep the next committed
        batch from being answered."""
        try:
            return await task
        except Exception:
            log.exception("publishing a committed batch's answers failed")
            return 0

    async def _answer(self, batch: _Batch, answers: list[Outgoing], publish: Publisher) -> int:
        await publish(answers)
        for event in batch.events:
            self.events.emit(event)
        return len(answers)

    async def run(self, publish: Publisher, stop: asyncio.Event) -> None:
        """Flush every ``flush_interval_ms`` while there is work, until ``stop``."""
        interval = self.settings.flush_interval_ms / 1000
        while not stop.is_set():
            waker = asyncio.ensure_future(self._wakeup.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            stopper.cancel()
            self._wakeup.clear()
            await asyncio.sleep(interval)  # gather a batch
            await self.flush(publish)
        await self.flush(publish)
