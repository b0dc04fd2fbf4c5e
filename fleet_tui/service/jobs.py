"""The job engine: the AWS IoT Jobs MQTT API for devices, and the loop that releases
executions at the configured rate and concurrency, times them out, retries them, aborts
jobs and completes them. Firmware updates are carried by the shadow's desired OTA keys and
count as SUCCEEDED only once the device reports the new version after its reboot and then
stays online and healthy for the soak time: never before.

Durability: every execution state change commits to the registry before anything about
it is published (answers to devices, notifications, desired writes), so a killed engine
neither loses an execution nor starts one twice; the rate limit counts durable
notification times, so it holds across a restart.

Only the holder of the registry's ``engine`` lease runs the loop and answers devices; a
second ``serve`` takes over when the holder stops renewing.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson

from fleet_tui.config import Settings
from fleet_tui.domain.jobs import (
    ACTIVE_STATES,
    CANCELED,
    FAILED,
    IN_PROGRESS,
    JOB_ABORTED,
    JOB_ACTIVE,
    JOB_COMPLETED,
    JOB_IN_PROGRESS,
    QUEUED,
    SHADOW_CARRIED,
    SUCCEEDED,
    TERMINAL_STATES,
    TIMED_OUT,
    JobSettings,
    abort_reason,
    device_transition,
)
from fleet_tui.domain.shadow import ShadowError
from fleet_tui.domain.version import VersionError, parse_version
from fleet_tui.registry.jobs_store import ExecutionRow, JobRow
from fleet_tui.registry.registry import NotFound, Registry
from fleet_tui.service.events import EventBus, PresenceChanged, ShadowChanged, TelemetryReceived
from fleet_tui.service.outbox import Outgoing
from fleet_tui.service.topics import JobsTopic, Topics, valid_thing

log = logging.getLogger(__name__)
Publisher = Callable[[Sequence[Outgoing]], Awaitable[object]]
LEASE = "engine"
OTA_KEYS = ("target_version", "ota_url", "ota_sha256")
REDRIVE_MAX = 3  # desired OTA writes again per execution (settings.jobs.redrive_s)
REDRIVE_PER_TICK = 5000  # watched executions one tick looks at for a redrive


def _desired_target(documents: dict[str, Any]) -> object:
    """The desired OTA target in an update/documents payload's current document."""
    current = documents.get("current")
    state = current.get("state") if isinstance(current, dict) else None
    desired = state.get("desired") if isinstance(state, dict) else None
    return desired.get("target_version") if isinstance(desired, dict) else None


def same_version(a: object, b: object) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if a == b:
        return True
    try:
        return parse_version(a) == parse_version(b)
    except VersionError:
        return a == b


@dataclass(slots=True)
class Watch:
    """A firmware execution in progress, watched through its device's shadow."""

    job_id: str
    target: str
    started_at: float
    soak_s: float
    seen_at: float | None = None  # first report of the new version (after the reboot)
    healthy_since: float | None = None
    phase: str = ""
    # When its desired OTA state was last written (0: by an engine before a takeover), and
    # how often again since: see JobsEngine._redrive.
    driven_at: float = 0.0
    redrives: int = 0
    # When this worker published the write's answers (its ShadowChanged): the device's
    # silence counts from then, not from a write still queued behind a large fan-out.
    published_at: float | None = None


@dataclass(slots=True)
class TickResult:
    out: list[Outgoing] = field(default_factory=list)
    desired: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # thing -> OTA
    changed_jobs: set[str] = field(default_factory=set)
    duration_s: float = 0.0
    release_left: int = 0  # of this tick's release cap; 0 with more to release: tick again
    more: bool = False  # a release was cut short by the cap
    # (job, executions started, soak, desired OTA state per target release): watched once
    # the tick's transaction is over
    to_watch: list[tuple[Any, Sequence[tuple[str, dict[str, Any] | None]], float,
                         dict[str, dict[str, Any]]]] = field(default_factory=list)


def _now_ms(now: float) -> int:
    return int(now * 1000)


class JobsEngine:
    def __init__(
        self, settings: Settings, registry: Registry, topics: Topics, *,
        shadows: Any, presence: Any, telemetry: Any, events: EventBus,
        clock: Callable[[], float] = time.time, holder: str = "engine",
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.topics = topics
        self.shadows = shadows
        self.presence = presence
        self.telemetry = telemetry
        self.events = events
        self.clock = clock
        self.holder = holder
        self.tick_s = settings.jobs.tick_s
        self.is_leader = False
        self.requests: list[tuple[JobsTopic, bytes]] = []
        self._wakeup = asyncio.Event()
        self.watch: dict[str, Watch] = {}
        self._soak_due: list[tuple[float, str, float]] = []  # (due, thing, healthy_since)
        # When to look at a watched thing again for _redrive: a heap, so a tick looks at
        # the few due, not at all 100k in flight (a scan was 1.5 s a second at 100k).
        self._redrive_due: list[tuple[float, str]] = []
        self.dirty: set[str] = set()
        self._ahead: asyncio.Future[TickResult] | None = None  # a release's next step
        self._publish: Publisher | None = None
        self._job_types: dict[str, str] = {}
        self._last_cancel_scan = 0.0
        self._last_redrive_scan = 0.0
        self.rollouts: Any = None  # RolloutEngine, set by the service
        # Automation (service/automation.py) hooks in here, kept small on purpose:
        # participants' ``prepare(now)`` runs before each tick takes the lock (heavy reads
        # go there, see service/evaluation.py), ``tick(conn, now, result)`` inside every
        # tick's transaction after the rollouts (scheduler, policies, alerts), and
        # ``after_tick(now)`` once it committed. ``release_gate(conn, job, now)`` returns a
        # device filter for a job's release step (maintenance windows) or None when every
        # device may start.
        self.participants: list[Any] = []
        self.release_gate: Callable[[Any, JobRow, float], Callable[[str], bool] | None] \
            | None = None
        self.stats = {"ticks": 0, "requests": 0, "last_tick_ms": 0.0, "max_tick_ms": 0.0}
        events.subscribe(self._on_event)

    # ------------------------------------------------------------------ events

    def _on_event(self, event: Any) -> None:
        if not isinstance(event, (ShadowChanged, PresenceChanged, TelemetryReceived)):
            return
        w = self.watch.get(event.thing)  # one lookup: the tick's thread may drop it
        if w is None:
            return
        self.dirty.add(event.thing)
        if w.published_at is None and isinstance(event, ShadowChanged) \
                and same_version(_desired_target(event.documents), w.target):
            w.published_at = self.clock()  # its delta (the write's answers) is out

    def handle(self, topic: JobsTopic, payload: bytes) -> None:
        """A device's jobs request; answered after the batch it joins has committed."""
        self.requests.append((topic, payload))
        self._wakeup.set()

    # ------------------------------------------------------------------ loop

    async def run(self, publish: Publisher, stop: asyncio.Event) -> None:
        last_tick = 0.0
        last_lease = 0.0
        more = False
        self._publish = publish
        self._wakeup.set()  # take the lease at once, not a quarter tick later
        # Stopping wakes the loop too: it may be waiting a quarter of a long tick.
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: self._wakeup.set())
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.tick_s / 4)
                self._wakeup.clear()
                if stop.is_set():
                    break
                await asyncio.sleep(0.01)  # gather a batch of requests
                now = self.clock()
                try:
                    if now - last_lease >= self.settings.jobs.lease_ttl_s / 3:
                        if await self._renew_lease(now):
                            await publish(await asyncio.to_thread(self.renotify, now))
                        last_lease = now
                    if self.requests:
                        if self._ahead is not None:  # one step at a time on engine state
                            await asyncio.wait([self._ahead])
                        batch, self.requests = self.requests, []
                        if self.is_leader:
                            out = await asyncio.to_thread(self.serve_requests, batch, now)
                            await publish(out)
                    if self.is_leader and (more or now - last_tick >= self.tick_s):
                        last_tick = now
                        more = (await self.tick_and_publish(publish, now)).more
                        if more:
                            self._wakeup.set()
                except Exception:
                    log.exception("job engine step failed; retrying")
        finally:
            stopping.cancel()
            await self._finish_ahead(publish)
        if self.is_leader:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.registry.leases.release, LEASE, self.holder)

    async def _renew_lease(self, now: float) -> bool:
        """Take or renew the lease; True when this engine has just become the leader."""
        was = self.is_leader
        self.is_leader = await asyncio.to_thread(
            self.registry.leases.acquire, LEASE, self.holder, self.settings.jobs.lease_ttl_s,
            now)
        if self.is_leader and not was:
            log.info("job engine: %s holds the engine lease", self.holder)
            await asyncio.to_thread(self.load_watch)
        elif was and not self.is_leader:
            log.warning("job engine: lost the engine lease")
            # What it released is sent still (the same desired state twice is harmless):
            # the lease is not checked inside a tick, so it may have committed after the
            # new leader loaded its watch.
            await self._finish_ahead(self._publish)
            self.watch.clear()
            self._soak_due.clear()
            self._redrive_due.clear()
        return self.is_leader and not was

    def renotify(self, now: float) -> list[Outgoing]:
        """notify-next again to every device told of work it has not started: a request
        the previous engine took but never answered is asked again (devices re-pull)."""
        out = []
        with self.registry.engine.connect() as conn:
            for job in self.registry.jobs.active(conn):
                if job.job_type in SHADOW_CARRIED:
                    continue
                for e in self.registry.jobs.executions(job.id, status=[QUEUED], conn=conn):
                    if e.notified_at is not None:
                        out.append(self._notify_next(e, job, now))
        return out

    async def tick_and_publish(self, publish: Publisher, now: float) -> TickResult:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            result = await ahead
        else:
            dirty, self.dirty = self.dirty, set()
            result = await asyncio.to_thread(self.tick, now, dirty)
        for participant in self.participants:
            await asyncio.to_thread(participant.after_tick, now)
        if result.more:
            # A release over one tick's cap: its next step (mostly in SQLite, outside the
            # GIL) runs while this step's desired writes are applied and sent. In a 100k
            # fan-out the ticks were half of the release's critical path.
            dirty, self.dirty = self.dirty, set()
            self._ahead = asyncio.ensure_future(
                asyncio.to_thread(self.tick, self.clock(), dirty))
        await self._send(publish, result)
        return result

    async def _send(self, publish: Publisher, result: TickResult) -> None:
        items = list(result.desired.items())
        for i in range(0, len(items), 1000):  # keep reading MQTT during a large release
            self.apply_desired(dict(items[i:i + 1000]))
            await asyncio.sleep(0)
        await publish(result.out)

    async def _finish_ahead(self, publish: Publisher | None) -> None:
        """Wait for a release step started ahead; send what it released (its executions
        are durable already: unsent, they would wait for the redrive)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        try:
            result = await ahead
            if publish is not None:
                await self._send(publish, result)
        except Exception:
            log.exception("job engine: the release step started ahead failed")

    # ------------------------------------------------------------ firmware watch

    def load_watch(self) -> int:
        """Rebuild the watch of in-progress firmware executions (after a (re)start)."""
        self.watch.clear()
        self._soak_due.clear()
        self._redrive_due.clear()
        now = self.clock()
        with self.registry.engine.connect() as conn:
            for job in self._tended_jobs(conn):
                if job.job_type not in SHADOW_CARRIED:
                    continue
                soak = JobSettings.from_dict(job.settings).soak_s
                for e in self.registry.jobs.executions(job.id, status=[IN_PROGRESS], conn=conn):
                    self.watch[e.device_id] = Watch(job.id, self._target_of(job, e.params),
                                                    e.started_at or now, soak)
                    self._redrive_at(now, e.device_id)
        self.dirty.update(self.watch)
        return len(self.watch)

    @staticmethod
    def _target_of(job: JobRow, params: dict[str, Any] | None) -> str:
        return str((params or {}).get("release") or job.document["release"])

    def _desired_for(self, version: str) -> dict[str, Any]:
        release = self.registry.get_release(version)
        url = release.url
        base = self.settings.jobs.firmware_base_url
        if base and "://" not in url:
            url = urljoin(base if base.endswith("/") else base + "/", url)
        return {"target_version": release.version, "ota_url": url,
                "ota_sha256": release.sha256}

    def apply_desired(self, desired: dict[str, dict[str, Any] | None]) -> None:
        """Write OTA desired state through the shadow service (its own batching and
        durability apply: the device gets its delta once the document is stored)."""
        token = f"fleet-engine-{_now_ms(self.clock())}"
        requests: dict[int, dict[str, Any]] = {}  # a release shares one state per target
        for thing, ota in desired.items():
            request = requests.get(id(ota))
            if request is None:
                state = ota if ota is not None else dict.fromkeys(OTA_KEYS)
                request = {"state": {"desired": state}, "clientToken": token}
                with contextlib.suppress(ShadowError):  # then each write is refused alone
                    request = self.shadows.prepare(request)
                requests[id(ota)] = request
            self.shadows.handle_internal(thing, request)

    def _evaluate(self, thing: str, w: Watch, now: float
                  ) -> tuple[str, dict[str, Any]] | None:
        """SUCCEEDED/FAILED with details, or None (still in progress; ``w`` updated)."""
        doc = self.shadows.peek(thing)
        reported = doc.reported if doc is not None else {}
        fw = reported.get("firmware_version")
        ota_status = reported.get("ota_status")
        if same_version(fw, w.target):
            if w.seen_at is None:
                w.seen_at = now
            online = bool(self.presence.online.get(thing))
            latest = self.telemetry.latest.get(thing)
            health = latest[0] if latest else None
            if online and health != "unhealthy":
                if w.healthy_since is None:
                    w.healthy_since = now
                    heapq.heappush(self._soak_due, (now + w.soak_s, thing, now))
                w.phase = "soaking"
                if now - w.healthy_since >= w.soak_s:
                    return SUCCEEDED, {"firmware_version": fw,
                                       "soaked_s": round(now - w.healthy_since, 1)}
            else:
                w.healthy_since = None
                w.phase = "confirming" if online else "offline after update"
            return None
        stamp = 0.0
        if doc is not None:
            meta = doc.metadata.get("reported", {})
            entry = meta.get("ota_status") if isinstance(meta, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("timestamp"), (int, float)):
                stamp = float(entry["timestamp"])
        if ota_status == "failed" and stamp >= int(w.started_at):
            return FAILED, {"reason": str(reported.get("ota_error") or "update failed"),
                            "firmware_version": fw}
        if w.seen_at is not None:
            return FAILED, {"reason": f"rolled back to {fw} after running {w.target}",
                            "firmware_version": fw}
        if isinstance(ota_status, str) and ota_status not in ("idle", ""):
            w.phase = ota_status
        return None

    # ------------------------------------------------------------------ tick

    def _tended_jobs(self, conn: Any) -> list[JobRow]:
        """Active jobs, and finished ones that still have executions in progress (a
        cancel without force lets those run to their end)."""
        jobs = {j.id: j for j in self.registry.jobs.active(conn)}
        for job_id in self.registry.jobs.finished_jobs_with(conn, [IN_PROGRESS]):
            jobs[job_id] = self.registry.jobs.get(job_id, conn)
        return sorted(jobs.values(), key=lambda j: j.created_at)

    def tick(self, now: float, dirty: set[str] | None = None) -> TickResult:
        """One engine step in one locked transaction; returns what to publish."""
        started = time.perf_counter()
        result = TickResult(release_left=max(1, self.settings.jobs.max_release_per_tick))
        dirty = set(dirty or ())
        dirty.update(self._soaked(now))
        for participant in self.participants:
            participant.prepare(now)
        with self.registry.locked() as conn:
            jobs = self._tended_jobs(conn)
            by_id = {j.id: j for j in jobs}
            # Firmware executions: what the shadows say since the last tick.
            finished: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
            details: dict[str, dict[str, dict[str, Any]]] = {}
            for thing in dirty:
                w = self.watch.get(thing)
                if w is None or w.job_id not in by_id:
                    continue
                before = w.phase
                verdict = self._evaluate(thing, w, now)
                if verdict is not None:
                    finished.setdefault(w.job_id, []).append((thing, *verdict))
                elif w.phase != before:
                    details.setdefault(w.job_id, {})[thing] = {"phase": w.phase}
            for job_id, items in finished.items():
                self.registry.jobs.finish_many(conn, job_id, items, IN_PROGRESS, now)
                result.changed_jobs.add(job_id)
                for thing, _, _ in items:
                    self.watch.pop(thing, None)
            for job_id, notes in details.items():
                self.registry.jobs.set_details(conn, job_id, notes, now)
            self._drop_canceled(conn, now, result)
            self._redrive(now, result)
            for job in jobs:
                self._tick_job(conn, job, now, result)
            if self.rollouts is not None:
                self.rollouts.tick(conn, now, result)
            for participant in self.participants:
                participant.tick(conn, now, result)
        # Watched once their start has committed (and outside the registry's lock).
        for job, started_now, soak_s, desired in result.to_watch:
            self._start_watching(job, started_now, soak_s, desired, now, result)
        self.stats["ticks"] += 1
        result.duration_s = time.perf_counter() - started
        ms = result.duration_s * 1000
        self.stats["last_tick_ms"] = ms
        self.stats["max_tick_ms"] = max(self.stats["max_tick_ms"], ms)
        return result

    def _soaked(self, now: float) -> list[str]:
        """Things whose soak time has run out: a heap of due times, not a scan of every
        watched thing per tick (100k in flight: 12 ms a tick). An entry whose soak was
        reset or whose watch ended since is stale and skipped."""
        due: list[str] = []
        later: list[tuple[float, str, float]] = []
        heap = self._soak_due
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            w = self.watch.get(entry[1])
            if w is None or w.healthy_since != entry[2]:
                continue
            if now - entry[2] >= w.soak_s:  # the very test _evaluate applies
                due.append(entry[1])
            else:  # a rounding hair early
                later.append(entry)
        for entry in later:
            heapq.heappush(heap, entry)
        return due

    def _redrive_at(self, when: float, thing: str) -> None:
        """Have _redrive look at ``thing`` again at ``when`` (nothing when redrive is off)."""
        if self.settings.jobs.redrive_s > 0:
            heapq.heappush(self._redrive_due, (when, thing))

    def _redrive(self, now: float, result: TickResult) -> None:
        """Write the desired OTA state again where a killed worker may have lost it.

        An execution is durable before its desired write, and that write can die with a
        worker: the engine's own, not yet committed (then a takeover: ``driven_at`` 0); one
        forwarded to a partition owner that died; or the delta an owner had not published.
        So a watched execution without a sign from its device is written again when its
        shadow's desired state lacks the target ``redrive_s`` after the write (at once after
        a takeover), or when its online device still shows nothing ``2 * redrive_s`` after
        the write (or the takeover); at most REDRIVE_MAX times. The same desired values
        only send the delta again, which a device that already has it ignores."""
        every = self.settings.jobs.redrive_s
        if every <= 0 or now - self._last_redrive_scan < min(every / 2, 1.0):
            return
        due = self._redrive_due  # what is pushed back is due later than now
        looked = 0
        while due and due[0][0] <= now:
            if looked == REDRIVE_PER_TICK:  # a bounded tick; the rest in the next ones
                break
            looked += 1
            _, thing = heapq.heappop(due)
            w = self.watch.get(thing)
            if w is None or w.phase or w.seen_at is not None or w.redrives >= REDRIVE_MAX:
                continue  # finished, or the device is at it: nothing more to drive
            if thing in result.desired:
                self._redrive_at(now + every, thing)
                continue
            age = now - w.driven_at
            if w.driven_at and age < every:
                self._redrive_at(w.driven_at + every, thing)
                continue
            doc = self.shadows.peek(thing)
            desired = doc.desired if doc is not None else {}
            reported = doc.reported if doc is not None else {}
            if same_version(reported.get("firmware_version"), w.target):
                self._redrive_at(now + every, thing)  # updated: its evaluation follows
                continue
            stored = same_version(desired.get("target_version"), w.target)
            if stored and not w.driven_at:
                # Watched since a takeover: whether its delta ever went out is unknown, so
                # its age counts from now.
                w.driven_at = w.published_at = now
                self._redrive_at(now + 2 * every, thing)
                continue
            if stored and self.shadows.owns(thing):
                # Ours to publish: silence counts once its delta is out; while the shadow
                # service still has answers to send, a second write would only queue behind
                # the first. Unpublished with nothing queued (a forwarded write whose owner
                # died before publishing, and whose partition is ours now): from the write.
                if w.published_at is not None:
                    age = now - w.published_at
                elif self.shadows.busy:
                    age = 0.0
            if stored and (age < 2 * every or not self.presence.online.get(thing)):
                # An offline device reads the stored state when it connects.
                self._redrive_at(now + max(2 * every - age, every / 2), thing)
                continue
            w.driven_at = now
            w.published_at = None
            w.redrives += 1
            self._redrive_at(now + every, thing)
            try:
                result.desired[thing] = self._desired_for(w.target)
            except NotFound:  # the release went away: its timeout will end the execution
                w.redrives = REDRIVE_MAX
                continue
            log.info("job engine: %s shows no sign of %s (job %s); writing its desired "
                     "OTA state again", thing, w.target, w.job_id)
        if looked < REDRIVE_PER_TICK:
            self._last_redrive_scan = now

    def _drop_canceled(self, conn: Any, now: float, result: TickResult) -> None:
        """Force-canceled firmware executions (by anyone, e.g. the CLI): clear the desired
        OTA state so that a device that has not started the download never does."""
        since, self._last_cancel_scan = self._last_cancel_scan, now
        for job_id, thing in self.registry.jobs.finished_since(conn, since - 1.0, [CANCELED]):
            w = self.watch.get(thing)
            if w is not None and w.job_id == job_id:
                del self.watch[thing]
                result.desired[thing] = None

    def _tick_job(self, conn: Any, job: JobRow, now: float, result: TickResult) -> None:
        store = self.registry.jobs
        settings = JobSettings.from_dict(job.settings)
        shadow = job.job_type in SHADOW_CARRIED
        if settings.timeout_s is not None:
            late = store.timed_out(conn, job.id, now - settings.timeout_s)
            moved = store.transition(conn, job.id, [e.device_id for e in late], [IN_PROGRESS],
                                     TIMED_OUT, now,
                                     details={"reason": f"no result within "
                                                        f"{settings.timeout_s:g} s"})
            for thing in moved:
                self.watch.pop(thing, None)
            if moved:
                result.changed_jobs.add(job.id)
        if job.status not in JOB_ACTIVE:
            return
        if settings.retries:
            retry = store.retryable(conn, job.id, settings.retry_on, settings.retries)
            if retry:
                store.requeue(conn, job.id, retry, now)
                result.changed_jobs.add(job.id)
        stats = store.stats(conn, job.id, now - 60)
        counts = stats.counts
        reason = abort_reason(settings, counts)
        if reason is not None:
            queued = store.device_ids(conn, job.id, [QUEUED])
            store.transition(conn, job.id, queued, [QUEUED], CANCELED, now,
                             details={"reason": "job aborted"})
            store.set_status(conn, job.id, JOB_ABORTED, reason, now)
            self.registry.audit.append(conn, "engine", "system", "job.abort", job.id,
                                       {"reason": reason, "counts": counts}, ts=now)
            result.changed_jobs.add(job.id)
            return
        if job.status == JOB_IN_PROGRESS:
            budget = settings.release_budget(stats.in_flight, stats.started_recently,
                                             stats.notified, counts.get(SUCCEEDED, 0))
            # A device outside its group's maintenance window is not released: it waits.
            allow = self.release_gate(conn, job, now) if self.release_gate else None
            capped = budget > result.release_left
            budget = min(budget, result.release_left)
            if shadow:
                started = store.start_next(conn, job.id, budget, now, allow=allow)
                # The releases' desired states are read here: a missing release rolls the
                # start back rather than leave executions started and never driven.
                targets = {self._target_of(job, params) for _, params in started}
                result.to_watch.append((job, started, settings.soak_s,
                                        {t: self._desired_for(t) for t in targets}))
                n = len(started)
            else:
                released = store.release(conn, job.id, budget, now, start=False, allow=allow)
                result.out.extend(self._notify_next(e, job, now) for e in released)
                n = len(released)
            # Another tick at once only if the cap, not the queue, stopped this release
            # (else a job with nothing left to release would tick back to back).
            result.more = result.more or (capped and n == budget)
            result.release_left -= n
            if n:
                result.changed_jobs.add(job.id)
        idle = not any(counts.get(s, 0) for s in ACTIVE_STATES)
        if idle and job.id not in result.changed_jobs and store.set_status(
                conn, job.id, JOB_COMPLETED, "", now, only_from=[JOB_IN_PROGRESS]):
            self.registry.audit.append(conn, "engine", "system", "job.complete", job.id,
                                       {"counts": counts}, ts=now)
            result.changed_jobs.add(job.id)

    def _start_watching(self, job: JobRow, started: Sequence[tuple[str, dict[str, Any] | None]],
                        soak_s: float, desired: dict[str, dict[str, Any]], now: float,
                        result: TickResult) -> None:
        """Watch the firmware executions just started; their desired OTA state (per target
        release, in ``desired``) goes out with the tick's result."""
        for device, params in started:
            target = self._target_of(job, params)
            self.watch[device] = Watch(job.id, target, now, soak_s, driven_at=now)
            self._redrive_at(now + self.settings.jobs.redrive_s, device)
            result.desired[device] = desired[target]

    # ------------------------------------------------------------ device API

    def _job_type(self, conn: Any, job_id: str) -> str | None:
        if job_id not in self._job_types:
            try:
                self._job_types[job_id] = self.registry.jobs.get(job_id, conn).job_type
            except Exception:
                return None
        return self._job_types[job_id]

    def _document(self, conn: Any, job_id: str) -> dict[str, Any]:
        return self.registry.jobs.get(job_id, conn).document

    def _execution_payload(self, conn: Any, e: ExecutionRow, *, document: bool = True
                           ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "jobId": e.job_id, "thingName": e.device_id, "status": e.status,
            "queuedAt": int(e.queued_at), "lastUpdatedAt": int(e.updated_at),
            "versionNumber": e.version_number, "executionNumber": e.attempt + 1,
        }
        if e.started_at is not None:
            data["startedAt"] = int(e.started_at)
        if e.status_details:
            data["statusDetails"] = {k: str(v) for k, v in e.status_details.items()}
        if document:
            data["jobDocument"] = self._document(conn, e.job_id)
        return data

    def _notify_next(self, e: ExecutionRow, job: JobRow, now: float) -> Outgoing:
        execution = {"jobId": e.job_id, "status": QUEUED, "queuedAt": int(e.queued_at),
                     "lastUpdatedAt": int(now), "versionNumber": e.version_number,
                     "executionNumber": e.attempt + 1, "jobDocument": job.document}
        return Outgoing(self.topics.jobs(e.device_id, "notify-next"),
                        orjson.dumps({"timestamp": int(now), "execution": execution}))

    def serve_requests(self, batch: Sequence[tuple[JobsTopic, bytes]], now: float
                       ) -> list[Outgoing]:
        """Answer a batch of device requests in one transaction (answers go out after it
        commits)."""
        out: list[Outgoing] = []
        self.stats["requests"] += len(batch)
        with self.registry.locked() as conn:
            things = sorted({t.thing for t, _ in batch if valid_thing(t.thing)})
            pending = self.registry.jobs.pending_for_devices(conn, things)
            for topic, payload in batch:
                out += self._serve_one(conn, topic, payload, pending, now)
        return out

    def _reject(self, topic: JobsTopic, op: str, code: str, message: str,
                token: Any, now: float) -> Outgoing:
        parts = [topic.job_id, op] if topic.job_id else [op]
        body: dict[str, Any] = {"code": code, "message": message, "timestamp": int(now)}
        if isinstance(token, str):
            body["clientToken"] = token
        return Outgoing(self.topics.jobs(topic.thing, *parts, "rejected"), orjson.dumps(body))

    def _serve_one(self, conn: Any, topic: JobsTopic, payload: bytes,
                   pending: dict[str, list[ExecutionRow]], now: float) -> list[Outgoing]:
        op = topic.op
        if not valid_thing(topic.thing):
            return []  # nowhere safe to answer: the topic itself is bad
        try:
            request = orjson.loads(payload) if payload.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
        except (orjson.JSONDecodeError, ValueError) as err:
            return [self._reject(topic, op, "InvalidJson", f"payload: {err}", None, now)]
        token = request.get("clientToken")
        if token is not None and (not isinstance(token, str) or len(token) > 64):
            return [self._reject(topic, op, "InvalidRequest",
                                 "clientToken: a string of at most 64 characters", None, now)]
        visible = [e for e in pending.get(topic.thing, [])
                   if self._job_type(conn, e.job_id) not in SHADOW_CARRIED]
        base: dict[str, Any] = {"timestamp": int(now)}
        if token is not None:
            base["clientToken"] = token
        if op == "start-next":
            return [self._start_next(conn, topic, request, visible, pending, base, now)]
        if op == "get" and topic.job_id is None:
            body = {**base,
                    "inProgressJobs": [self._summary(e) for e in visible
                                       if e.status == IN_PROGRESS],
                    "queuedJobs": [self._summary(e) for e in visible if e.status == QUEUED]}
            return [Outgoing(self.topics.jobs(topic.thing, "get", "accepted"),
                             orjson.dumps(body))]
        assert topic.job_id is not None
        e = self.registry.jobs.execution(conn, topic.job_id, topic.thing)
        if e is None or e.notified_at is None:
            return [self._reject(topic, op, "ResourceNotFound",
                                 f"no execution of job {topic.job_id} for {topic.thing}",
                                 token, now)]
        if op == "get":
            include = request.get("includeJobDocument", True) is not False
            body = {**base, "execution": self._execution_payload(conn, e, document=include)}
            return [Outgoing(self.topics.jobs(topic.thing, topic.job_id, "get", "accepted"),
                             orjson.dumps(body))]
        return [self._update(conn, topic, request, e, base, now)]

    @staticmethod
    def _summary(e: ExecutionRow) -> dict[str, Any]:
        return {"jobId": e.job_id, "queuedAt": int(e.queued_at),
                "lastUpdatedAt": int(e.updated_at), "versionNumber": e.version_number,
                "executionNumber": e.attempt + 1}

    def _start_next(self, conn: Any, topic: JobsTopic, request: dict[str, Any],
                    visible: list[ExecutionRow], pending: dict[str, list[ExecutionRow]],
                    base: dict[str, Any], now: float) -> Outgoing:
        accepted = self.topics.jobs(topic.thing, "start-next", "accepted")
        running = [e for e in visible if e.status == IN_PROGRESS]
        queued = [e for e in visible if e.status == QUEUED]
        if running:  # AWS answers with the execution already in progress
            return Outgoing(accepted, orjson.dumps(
                {**base, "execution": self._execution_payload(conn, running[0])}))
        if not queued:
            return Outgoing(accepted, orjson.dumps(base))
        e = queued[0]
        details = request.get("statusDetails")
        values: dict[str, Any] = {"status": IN_PROGRESS, "started_at": now, "updated_at": now}
        if isinstance(details, dict):
            values["status_details"] = {str(k): str(v) for k, v in details.items()}
        if not self.registry.jobs.update_execution(conn, e.job_id, e.device_id, QUEUED,
                                                   values):
            return Outgoing(accepted, orjson.dumps(base))
        fresh = self.registry.jobs.execution(conn, e.job_id, e.device_id)
        assert fresh is not None
        # Later requests of this batch see the new state.
        pending[topic.thing] = [fresh if x.job_id == e.job_id else x
                                for x in pending.get(topic.thing, [])]
        return Outgoing(accepted, orjson.dumps(
            {**base, "execution": self._execution_payload(conn, fresh)}))

    def _update(self, conn: Any, topic: JobsTopic, request: dict[str, Any], e: ExecutionRow,
                base: dict[str, Any], now: float) -> Outgoing:
        assert topic.job_id is not None
        token = request.get("clientToken")
        status = request.get("status")
        if not isinstance(status, str):
            return self._reject(topic, "update", "InvalidRequest", "status: required",
                                token, now)
        expected = request.get("expectedVersion")
        if expected is not None and expected != e.version_number:
            return self._reject(topic, "update", "VersionMismatch",
                                f"expectedVersion {expected} is not the current "
                                f"{e.version_number}", token, now)
        problem = device_transition(e.status, status)
        if problem is not None:
            code = "TerminalStateReached" if e.status in TERMINAL_STATES else \
                "InvalidStateTransition"
            return self._reject(topic, "update", code, problem, token, now)
        details = request.get("statusDetails")
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if isinstance(details, dict):
            values["status_details"] = {str(k)[:128]: str(v)[:1024]
                                        for k, v in list(details.items())[:10]}
        if status in TERMINAL_STATES:
            values["finished_at"] = now
        if e.started_at is None:
            values["started_at"] = now
        if not self.registry.jobs.update_execution(conn, topic.job_id, topic.thing, e.status,
                                                   values):
            return self._reject(topic, "update", "VersionMismatch",
                                "the execution changed meanwhile", token, now)
        body = {**base, "executionState": {"status": status,
                                           "statusDetails": values.get("status_details")
                                           or e.status_details or {},
                                           "versionNumber": e.version_number + 1}}
        if request.get("includeJobDocument"):
            body["jobDocument"] = self._document(conn, topic.job_id)
        return Outgoing(self.topics.jobs(topic.thing, topic.job_id, "update", "accepted"),
                        orjson.dumps(body))
