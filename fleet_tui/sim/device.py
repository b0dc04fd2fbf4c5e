"""One simulated ESP32 device as a state machine without I/O.

A port of the firmware's portable core (``firmware/core/device.c``, ``shadow.c``,
``ota.c``, ``jobs.c``, ``telemetry.c``) and of what the Linux host build adds around it
(``firmware/host``: A/B slots, the bootloader's crash-loop and confirm-timeout rollback,
NVS). Every method takes the current monotonic time and returns the :data:`Action` list
the runner must carry out; nothing here touches a socket, a clock or a file, so tests feed
messages and time and look at what comes out.

Lifecycle (what the runner does with the actions)::

    power_on() -> [Connect]                      the app runs; connect with backoff
    on_connect() -> [Subscribe, Publish...]      presence, shadow get + report, jobs, telemetry
    on_message()/tick() -> [Publish..., Download | Restart | DropConnection]
    Download      -> fetch the URL, then on_download(data | error)
    Restart(d)    -> drop the link WITHOUT DISCONNECT (the broker sends the last will),
                     wait d seconds, then boot() -> [Connect] or another [Restart] (crash)
    DropConnection(d) -> flaky link: drop it, reconnect after d seconds (the app keeps running)

Shadow updates follow the retry contract as ``device.c`` does (docs/scale-out.md): one
in flight, resent with the same clientToken and bytes on timeout (``tick``), 500 or 429,
newer reports merged into one queued behind it.

Deliberate differences from the C code: an OTA download runs asynchronously (the C device
blocks in it; here incoming messages are held back and telemetry paused while it runs, so
the observable behaviour is the same), and with ``firmware_base_url`` set a relative
``ota_url`` is accepted and resolved against it for the download (the firmware requires an
absolute URL; the value reported back is the desired one either way).
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson

from fleet_tui.sim.profiles import NO_PROFILE, DeviceProfile
from fleet_tui.sim.protocol import (
    ERROR_MAX,
    JOB_ID_MAX,
    KEY_MAX,
    PRESENCE_OFFLINE,
    REJECTED_MAX,
    SHADOW_ATTEMPTS_MAX,
    SHADOW_RETRY_DEFAULT_S,
    TELEMETRY_MAX_S,
    TELEMETRY_MIN_S,
    Delta,
    DocumentError,
    OtaTarget,
    Topic,
    Topics,
    doc_object,
    doc_string,
    job_id_is_valid,
    json_number,
    merge_reported,
    parse_delta,
    parse_document,
    parse_image_header,
    rejection_is_retryable,
    same_sha,
    sha256_hex_is_valid,
    shadow_retry_seed,
    shadow_retry_wait_s,
    thing_name_is_valid,
    url_is_valid,
    version_compare,
    version_is_valid,
)

log = logging.getLogger(__name__)

CRASH_LOOP_BOOTS = 3  # supervisor.c: pending image crashing this many boots -> rollback
REBOOT_FLUSH_S = 3.0  # port_linux.c: a reboot waits this long for QoS 1 acks
DEFAULT_INTERVAL_S = 60
LEAK_PANIC_HEAP = 8192  # memory-leak profile: the allocator fails below this


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False

    def json(self) -> Any:
        return orjson.loads(self.payload)


@dataclass(frozen=True, slots=True)
class Subscribe:
    filters: tuple[str, ...]
    qos: int = 1


@dataclass(frozen=True, slots=True)
class Connect:
    """The app is up: connect (with the firmware's 1..30 s backoff) and call on_connect."""


@dataclass(frozen=True, slots=True)
class Download:
    """HTTP GET ``url``; feed the body or the error to :meth:`Device.on_download`.

    ``bytes_per_s`` throttles the transfer; ``fail_after`` breaks it off after that many
    bytes (failure profiles)."""

    url: str
    bytes_per_s: float | None = None
    fail_after: int | None = None


@dataclass(frozen=True, slots=True)
class Restart:
    """Reset: drop the connection without DISCONNECT (``flush``: first wait up to
    REBOOT_FLUSH_S for QoS 1 acks, as a software reboot does), then call
    :meth:`Device.boot` after ``delay_s``."""

    delay_s: float
    flush: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Network trouble: drop the link without DISCONNECT; reconnect after ``offline_s``."""

    offline_s: float


Action = Publish | Subscribe | Connect | Download | Restart | DropConnection


def _dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def _str_or_none(value: str) -> str | None:
    return value if value else None


# ------------------------------------------------------------------------------ config


@dataclass
class DeviceConfig:
    thing: str
    hardware_rev: str
    firmware_version: str  # the factory image
    location: str = ""
    shadow_prefix: str = "$aws/things"
    fleet_prefix: str = "fleet"
    telemetry_interval_s: int = DEFAULT_INTERVAL_S  # until the shadow sets one
    confirm_timeout_s: float = 30.0
    boot_delay_s: float = 0.5
    firmware_base_url: str | None = None
    # The retry contract: an unanswered shadow update is sent again after this long
    # (doubling per attempt); the C device's shadow_retry_ms.
    shadow_retry_s: float = SHADOW_RETRY_DEFAULT_S

    def validate(self) -> None:
        if not thing_name_is_valid(self.thing):
            raise ValueError(f"thing {self.thing!r}: expected [a-zA-Z0-9:_-]{{1,128}}")
        if not version_is_valid(self.firmware_version):
            raise ValueError(f"{self.thing}: invalid firmware version {self.firmware_version!r}")
        if not self.hardware_rev or len(self.hardware_rev) > 32:
            raise ValueError(f"{self.thing}: invalid hardware revision {self.hardware_rev!r}")
        if len(self.location) > 64:
            raise ValueError(f"{self.thing}: location longer than 64 characters")
        if not TELEMETRY_MIN_S <= self.telemetry_interval_s <= TELEMETRY_MAX_S:
            raise ValueError("telemetry interval must be 1..86400 s")
        if not 0 < self.shadow_retry_s <= 3600:
            raise ValueError("shadow retry timeout must be in (0, 3600] s")


# ------------------------------------------------------------------------------- flash


@dataclass
class Slot:
    version: str
    crash_on_hw: str = ""
    profile_crash: bool = False  # crash-loop profile matched when it was installed


@dataclass
class Flash:
    """What survives a reboot: the A/B slots with the bootloader's otadata, and NVS."""

    active: Slot
    previous: Slot | None = None
    pending: bool = False
    boot_attempts: int = 0
    rollback_reason: str = ""
    nvs: dict[str, str] = field(default_factory=dict)

    def target(self, kver: str, kurl: str | None, ksha: str) -> OtaTarget:
        t = OtaTarget()
        v = self.nvs.get(kver, "")
        t.version = v if version_is_valid(v) else ""
        if kurl is not None:
            u = self.nvs.get(kurl, "")
            t.url = u
        s = self.nvs.get(ksha, "")
        t.sha256 = s if sha256_hex_is_valid(s) else ""
        return t

    def store_target(self, kver: str, kurl: str | None, ksha: str, t: OtaTarget) -> None:
        self.nvs_set(kver, t.version)
        if kurl is not None:
            self.nvs_set(kurl, t.url)
        self.nvs_set(ksha, t.sha256)

    def nvs_set(self, key: str, value: str | None) -> None:
        if value:
            self.nvs[key] = value
        else:
            self.nvs.pop(key, None)


# NVS keys of the firmware (ESP-IDF allows at most 15 characters).
K_LED, K_INTERVAL, K_REBOOT_JOB = "led_is_on", "telem_intvl", "job_reboot"
K_STATUS, K_ERROR = "ota_status", "ota_error"
K_APPLIED = ("ota_app_ver", "ota_app_url", "ota_app_sha")
K_FAILED = ("ota_fail_ver", None, "ota_fail_sha")
K_PENDING = ("ota_pend_ver", "ota_pend_url", "ota_pend_sha")


# ----------------------------------------------------------------------- shadow updates


@dataclass
class ShadowUpdate:
    """The one shadow update in flight, kept as sent: a retry is the same token and bytes."""

    token: str
    payload: bytes
    attempts: int
    deadline: float


# ------------------------------------------------------------------------------ device


class Device:
    """The device: flash that persists across reboots, and the running app's state."""

    def __init__(self, config: DeviceConfig, *, rng: random.Random | None = None,
                 profile: DeviceProfile = NO_PROFILE, wall_offset: float = 0.0) -> None:
        config.validate()
        self.cfg = config
        self.profile = profile
        self.rng = rng or random.Random(config.thing)
        self.wall_offset = wall_offset  # epoch seconds = monotonic now + wall_offset
        self.topics = Topics(config.thing, config.shadow_prefix, config.fleet_prefix)
        self.flash = Flash(Slot(config.firmware_version))
        self.crash_streak = 0
        self.reset_reason = "poweron"
        self.running = False  # the app is up (between boot and the next reset)
        self.connected = False
        self.connections = 0
        self.boots = 0
        self._refused: frozenset[str] = (
            frozenset({"telemetry_interval_s"}) if profile.strict_config else frozenset())
        self._init_volatile(0.0)

    # ------------------------------------------------------------------ boot and reset

    def _init_volatile(self, now: float) -> None:
        self.boot_time = now
        self.clock = now  # the time of the event being handled (deadlines start from it)
        self.confirm_deadline: float | None = None
        self.pending_verify = False
        self.token_seq = 0
        self.token_salt = 0
        self.retry_seed = shadow_retry_seed(self.cfg.thing)
        self.errors = 0
        self.led_is_on = False
        self.telemetry_interval_s = self.cfg.telemetry_interval_s
        self.ota_status = "idle"
        self.ota_error = ""
        self.ota_desired = OtaTarget()
        self.ota_applied = OtaTarget()
        self.ota_failed = OtaTarget()
        self.ota_pending = OtaTarget()
        self.ota_job = OtaTarget()
        self.installing = False
        self.deferred: list[tuple[str, bytes]] = []
        self.boot_report_token = ""
        self.have_delta_version = False
        self.last_delta_version = 0
        self.last_delta_fingerprint = 0
        self.reported_rejected = ""
        self.reported_rejected_known = False
        # The retry contract: one update in flight; newer reports merge into the queued one.
        self.update_in_flight: ShadowUpdate | None = None
        self.update_queued: dict[str, Any] | None = None
        self.update_queued_full = False
        self.jobs_state = "idle"  # idle | wait_start_next | wait_update
        self.current_job = ""
        self.rejected_job = ""
        self.reboot_job = ""
        self.pull_again = False
        self.temp_c, self.cpu_pct, self.heap_free, self.rssi = 40.0, 12.0, 180000, -60
        self.telemetry_due = 0.0
        self.telemetry_last = now
        self.next_drop: float | None = None

    @property
    def firmware_version(self) -> str:
        return self.flash.active.version

    @property
    def will(self) -> tuple[str, bytes]:
        """The last will to register before connecting (retained, QoS 1)."""
        return self.topics.build(Topic.PRESENCE), PRESENCE_OFFLINE

    def power_on(self, now: float) -> list[Action]:
        self.reset_reason = "poweron"
        return self.boot(now)

    def boot(self, now: float) -> list[Action]:
        """The bootloader (``supervisor.c``) picks the slot; the app starts or crashes."""
        flash = self.flash
        self.boots += 1
        self.running = False
        self.connected = False
        deadline = None
        if flash.pending:
            flash.boot_attempts += 1
            deadline = now + self.cfg.confirm_timeout_s
        slot = flash.active
        if (slot.crash_on_hw and slot.crash_on_hw == self.cfg.hardware_rev) or slot.profile_crash:
            log.info("%s: firmware %s panics at boot on %s", self.cfg.thing, slot.version,
                     self.cfg.hardware_rev)
            return self._crashed(now)
        self._start_app(now)
        self.confirm_deadline = deadline
        return [Connect()]

    def _crashed(self, now: float) -> list[Action]:
        """The app died (panic): the supervisor counts it and maybe rolls back."""
        self.running = False
        self.connected = False
        self.installing = False
        self.reset_reason = "panic"
        self.crash_streak += 1
        if self.flash.pending and self.flash.boot_attempts >= CRASH_LOOP_BOOTS:
            self._rollback("crash loop on boot")
            self.reset_reason = "ota_rollback"
            self.crash_streak = 0
        streak = self.crash_streak
        backoff = 0.2 if streak <= 3 else (5.0 if streak > 8 else 0.2 * (1 << (streak - 3)))
        return [Restart(backoff + self.cfg.boot_delay_s, flush=False, reason="panic")]

    def _rollback(self, reason: str) -> None:
        flash = self.flash
        if flash.previous is None:
            log.warning("%s: slot failed (%s) and there is no slot to roll back to",
                        self.cfg.thing, reason)
        else:
            log.info("%s: rolling back %s -> %s: %s", self.cfg.thing, flash.active.version,
                     flash.previous.version, reason)
            flash.active, flash.previous = flash.previous, None
            flash.rollback_reason = reason
        flash.pending = False
        flash.boot_attempts = 0

    def _start_app(self, now: float) -> None:
        """``app_run`` + ``fleet_device_init``: settings from NVS, OTA settled, jobs."""
        flash = self.flash
        self._init_volatile(now)
        self.running = True
        self.pending_verify = flash.pending
        self.token_salt = self.rng.getrandbits(32)
        nvs = flash.nvs
        self.led_is_on = nvs.get(K_LED) == "1"
        raw = nvs.get(K_INTERVAL, "")
        if raw.isdigit() and TELEMETRY_MIN_S <= int(raw) <= TELEMETRY_MAX_S:
            self.telemetry_interval_s = int(raw)
        rollback_reason = flash.rollback_reason
        self._ota_boot(rollback_reason)
        if not self.pending_verify:
            self._ota_confirmed()
        reboot_job = nvs.get(K_REBOOT_JOB, "")
        self.reboot_job = reboot_job if job_id_is_valid(reboot_job) else ""
        flash.rollback_reason = ""  # the core persisted the failure; app.c clears it
        if self.profile.flaky_mean_s is not None:
            self.next_drop = None  # drawn on connect

    def _ota_boot(self, rollback_reason: str) -> None:
        """``fleet_ota_boot``: what the last boot means for the OTA memory."""
        flash = self.flash
        self.ota_applied = flash.target(*K_APPLIED)
        self.ota_failed = flash.target(*K_FAILED)
        self.ota_pending = flash.target(*K_PENDING)
        failed = flash.nvs.get(K_STATUS) == "failed"
        self.ota_status = "failed" if failed else "idle"
        self.ota_error = flash.nvs.get(K_ERROR, "") if failed else ""
        if rollback_reason:
            if self.ota_pending.version:
                self.ota_failed = self.ota_pending.copy()
                flash.store_target(*K_FAILED, self.ota_failed)
            self.ota_status = "failed"
            self.ota_error = f"rolled back: {rollback_reason[:160]}"
            self.ota_pending = OtaTarget()
            flash.store_target(*K_PENDING, self.ota_pending)
            self._store_status()
        elif self.ota_pending.version:
            if version_compare(self.ota_pending.version, self.firmware_version) == 0:
                self.ota_status = "idle"
                self.ota_error = ""
                self.ota_applied = self.ota_pending.copy()  # persisted once confirmed
                self._store_status()
            else:
                self.ota_pending = OtaTarget()
                flash.store_target(*K_PENDING, self.ota_pending)
        self.ota_desired = self.ota_applied.copy()

    def _store_status(self) -> None:
        self.flash.nvs_set(K_STATUS, "failed" if self.ota_status == "failed" else None)
        self.flash.nvs_set(K_ERROR, self.ota_error)

    def _ota_confirmed(self) -> None:
        if not self.ota_pending.version:
            return
        self.ota_applied = self.ota_pending.copy()
        self.flash.store_target(*K_APPLIED, self.ota_applied)
        self.ota_pending = OtaTarget()
        self.flash.store_target(*K_PENDING, self.ota_pending)

    # ------------------------------------------------------------------ publishing

    def _token(self) -> str:
        self.token_seq += 1
        return f"{self.token_salt:08x}-{self.token_seq}"

    def _token_is_ours(self, token: str | None) -> bool:
        return token is not None and token.startswith(f"{self.token_salt:08x}-")

    def _publish(self, out: list[Action], kind: Topic, doc: dict[str, Any], qos: int = 1,
                 retain: bool = False, job_id: str | None = None) -> None:
        out.append(Publish(self.topics.build(kind, job_id), _dumps(doc), qos, retain))

    def _report(self, out: list[Action], reported: dict[str, Any], full: bool = False) -> None:
        """Report under the retry contract: one update in flight per shadow; a report made
        meanwhile waits, merged into the queued one (``submit_report`` in device.c)."""
        if self.update_in_flight is None:
            self._send_update(out, reported, full)
            return
        if self.update_queued is None:
            self.update_queued = {}
        merge_reported(self.update_queued, reported)
        self.update_queued_full = self.update_queued_full or full

    def _send_update(self, out: list[Action], reported: dict[str, Any], full: bool) -> None:
        token = self._token()
        payload = _dumps({"state": {"reported": reported}, "clientToken": token})
        if full:
            self.boot_report_token = token
        self.update_in_flight = ShadowUpdate(
            token, payload, 1, self.clock + shadow_retry_wait_s(self.cfg.shadow_retry_s, 1,
                                                 self.retry_seed))
        out.append(Publish(self.topics.build(Topic.SHADOW_UPDATE), payload, 1))

    def _send_queued(self, out: list[Action]) -> None:
        queued, self.update_queued = self.update_queued, None
        full, self.update_queued_full = self.update_queued_full, False
        if queued is not None:
            self._send_update(out, queued, full)

    def _finish_update(self, out: list[Action]) -> None:
        """The update in flight is done (answered, refused or given up): the queued goes."""
        self.update_in_flight = None
        self._send_queued(out)

    def _retry_update(self, out: list[Action], now: float) -> None:
        update = self.update_in_flight
        assert update is not None
        if update.attempts >= SHADOW_ATTEMPTS_MAX:
            log.warning("%s: shadow update %s unanswered after %d attempts; giving up",
                        self.cfg.thing, update.token, update.attempts)
            self.errors += 1
            self._finish_update(out)
            return
        update.attempts += 1
        update.deadline = now + shadow_retry_wait_s(self.cfg.shadow_retry_s, update.attempts,
                                                    self.retry_seed)
        log.info("%s: shadow update %s: attempt %d", self.cfg.thing, update.token,
                 update.attempts)
        out.append(Publish(self.topics.build(Topic.SHADOW_UPDATE), update.payload, 1))

    def _is_in_flight(self, token: str | None) -> bool:
        return self.update_in_flight is not None and token == self.update_in_flight.token

    def _add_ota_status(self, patch: dict[str, Any]) -> None:
        patch["ota_status"] = self.ota_status
        patch["ota_error"] = _str_or_none(self.ota_error)

    @staticmethod
    def _add_ota_trio(patch: dict[str, Any], t: OtaTarget) -> None:
        patch["target_version"] = _str_or_none(t.version)
        patch["ota_url"] = _str_or_none(t.url)
        patch["ota_sha256"] = _str_or_none(t.sha256)

    def _full_report(self, out: list[Action]) -> None:
        self._report(out, self._full_reported(), full=True)

    def _full_reported(self) -> dict[str, Any]:
        reported: dict[str, Any] = {
            "firmware_version": self.firmware_version,
            "hardware_rev": self.cfg.hardware_rev,
            "led_is_on": self.led_is_on,
            "telemetry_interval_s": self.telemetry_interval_s,
        }
        if self.cfg.location:
            reported["tags"] = {"location": self.cfg.location}
        self._add_ota_status(reported)
        self._add_ota_trio(reported, self.ota_applied)
        return reported

    # ------------------------------------------------------------------ sensors

    def _step_sensors(self) -> None:
        """``fleet_telemetry_step``: a random walk nudged back to rest; one byte each."""
        r = self.rng.getrandbits(32)

        def step(byte: int, value: float, rest: float, spread: float) -> float:
            return value + ((byte & 0xFF) - 127.5) / 127.5 * spread + (rest - value) * 0.05

        self.temp_c = min(max(step(r, self.temp_c, 40.0, 0.4), 20.0), 85.0)
        self.cpu_pct = min(max(step(r >> 8, self.cpu_pct, 12.0, 3.0), 0.5), 100.0)
        self.heap_free = int(min(max(step(r >> 16, self.heap_free, 180000.0, 800.0), 60000.0),
                                 240000.0))
        self.rssi = int(min(max(step(r >> 24, self.rssi, -60.0, 2.0), -95.0), -30.0))

    def uptime_s(self, now: float) -> int:
        return int(max(0.0, now - self.boot_time))

    def reading_temp_c(self) -> float:
        if self.profile.bad_sensor and self.rng.random() < 0.7:
            return self.rng.uniform(95.0, 125.0)
        return self.temp_c

    def reading_heap_free(self, now: float) -> int:
        if self.profile.leak_bytes_per_s is None:
            return self.heap_free
        leaked = int(self.profile.leak_bytes_per_s * (now - self.boot_time))
        return max(self.heap_free - leaked, LEAK_PANIC_HEAP // 2)

    def _publish_telemetry(self, out: list[Action], now: float) -> None:
        self._step_sensors()
        doc = {
            "ts": json_number(round(now + self.wall_offset, 3)),
            "uptime_s": self.uptime_s(now),
            "heap_free": self.reading_heap_free(now),
            "rssi": self.rssi,
            "cpu_pct": json_number(round(self.cpu_pct, 1)),
            "temp_c": json_number(round(self.reading_temp_c(), 2)),
            "reset_reason": self.reset_reason,
            "errors": self.errors,
        }
        self._publish(out, Topic.TELEMETRY, doc, qos=0)
        self.telemetry_last = now
        self.telemetry_due = now + self.telemetry_interval_s

    # ------------------------------------------------------------------ connection

    def on_connect(self, now: float) -> list[Action]:
        out: list[Action] = []
        if not self.running:
            return out
        self.clock = now
        self.connected = True
        self.connections += 1
        self.have_delta_version = False
        self.last_delta_fingerprint = 0
        self.reported_rejected_known = False
        out.append(Subscribe(tuple(self.topics.subscriptions())))
        self._publish(out, Topic.PRESENCE, {
            "state": "online",
            "firmware_version": self.firmware_version,
            "hardware_rev": self.cfg.hardware_rev,
            "ts": int(now + self.wall_offset),
        }, qos=1, retain=True)
        self._publish(out, Topic.SHADOW_GET, {"clientToken": self._token()})
        if self.update_in_flight is not None:
            # Its answer may have been lost with the link: send it again before the report.
            self._retry_update(out, now)
        self._full_report(out)
        self._jobs_on_connect(out)
        self._publish_telemetry(out, now)
        if self.profile.flaky_mean_s is not None:
            self.next_drop = now + self.rng.expovariate(1.0 / self.profile.flaky_mean_s)
        return out

    def on_disconnect(self, now: float) -> list[Action]:
        self.connected = False
        return []

    def power_off(self, now: float) -> list[Action]:
        """Clean power-off: retained offline presence (then the runner disconnects)."""
        if not self.connected:
            return []
        topic, payload = self.will
        self.running = False
        return [Publish(topic, payload, 1, True)]

    # ------------------------------------------------------------------ timers

    def next_wakeup(self) -> float | None:
        """Monotonic time at which :meth:`tick` has work (None: nothing scheduled)."""
        if not self.running:
            return None
        times = []
        if self.confirm_deadline is not None:
            times.append(self.confirm_deadline)
        if self.connected and not self.installing:
            times.append(self.telemetry_due)
            if self.next_drop is not None:
                times.append(self.next_drop)
        update = self.update_in_flight
        if update is not None and not self.installing and (
                self.connected or update.attempts >= SHADOW_ATTEMPTS_MAX):
            times.append(update.deadline)
        if self.profile.leak_bytes_per_s is not None:
            headroom = self.heap_free - LEAK_PANIC_HEAP
            times.append(self.boot_time + max(headroom, 0) / self.profile.leak_bytes_per_s)
        return min(times) if times else None

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        if not self.running:
            return out
        self.clock = now
        if self.confirm_deadline is not None and now >= self.confirm_deadline:
            if self.flash.pending:
                # The bootloader kills the unconfirmed image and boots the previous one.
                self.running = self.connected = self.installing = False
                self._rollback(f"not confirmed within {int(self.cfg.confirm_timeout_s)} s")
                self.reset_reason = "ota_rollback"
                return [Restart(self.cfg.boot_delay_s, flush=False, reason="confirm timeout")]
            self.confirm_deadline = None
        if (self.profile.leak_bytes_per_s is not None
                and self.reading_heap_free(now) <= LEAK_PANIC_HEAP):
            log.info("%s: out of memory: panic", self.cfg.thing)
            return self._crashed(now)
        if self.installing:
            return out
        if self.connected and self.next_drop is not None and now >= self.next_drop:
            self.connected = False
            self.next_drop = None
            return [DropConnection(self.rng.uniform(1.0, 15.0))]
        if self.connected and now >= self.telemetry_due:
            self._publish_telemetry(out, now)
        update = self.update_in_flight
        if update is not None and now >= update.deadline and (
                self.connected or update.attempts >= SHADOW_ATTEMPTS_MAX):
            self._retry_update(out, now)  # offline: on_connect sends it again
        return out

    # ------------------------------------------------------------------ messages

    def on_message(self, now: float, topic: str, payload: bytes) -> list[Action]:
        out: list[Action] = []
        if not self.running:
            return out
        if self.installing:  # the C device is blocked in its download: events queue up
            self.deferred.append((topic, payload))
            return out
        self._handle_message(out, now, topic, payload)
        return out

    def _handle_message(self, out: list[Action], now: float, topic: str, payload: bytes) -> None:
        self.clock = now
        kind, job_id = self.topics.parse(topic)
        if kind is Topic.UNKNOWN:
            return
        try:
            doc = parse_document(payload)
        except DocumentError as err:
            log.debug("%s: dropping message on %s: %s", self.cfg.thing, topic, err)
            self.errors += 1
            return
        if kind is Topic.SHADOW_DELTA:
            self._handle_delta(out, doc_object(doc, "state"), doc.get("version"), False)
        elif kind is Topic.SHADOW_GET_ACCEPTED:
            self._handle_get_accepted(out, doc)
        elif kind is Topic.SHADOW_GET_REJECTED:
            if self._token_is_ours(doc_string(doc, "clientToken")):
                self.reported_rejected = ""  # no shadow: nothing rejected in it
                self.reported_rejected_known = True
        elif kind is Topic.SHADOW_UPDATE_ACCEPTED:
            self._handle_update_accepted(out, doc)
        elif kind is Topic.SHADOW_UPDATE_REJECTED:
            self._handle_update_rejected(out, doc)
        else:
            self._jobs_on_message(out, now, kind, job_id, doc)
        self._maybe_start_install(out)

    # ------------------------------------------------------------------ shadow

    def _apply_settings(self, d: Delta, patch: dict[str, Any]) -> None:
        if d.led_is_on is not None:
            self.led_is_on = d.led_is_on
            self.flash.nvs_set(K_LED, "1" if d.led_is_on else "0")
            patch["led_is_on"] = d.led_is_on
        if d.telemetry_interval_s is not None:
            self.telemetry_interval_s = d.telemetry_interval_s
            self.flash.nvs_set(K_INTERVAL, str(d.telemetry_interval_s))
            self.telemetry_due = self.telemetry_last + d.telemetry_interval_s
            patch["telemetry_interval_s"] = d.telemetry_interval_s

    def _reconcile_rejected(self, d: Delta, patch: dict[str, Any]) -> None:
        joined = d.rejected_joined()
        if self.reported_rejected_known and joined == self.reported_rejected:
            return
        if d.rejected:
            log.info("%s: rejected desired keys: %s", self.cfg.thing, d.config_error)
            patch["rejected_keys"] = list(d.rejected)
            patch["config_error"] = d.config_error
        else:
            patch["rejected_keys"] = None
            patch["config_error"] = None
        self.reported_rejected = joined
        self.reported_rejected_known = True

    def _ota_decide(self) -> str:
        desired, failed = self.ota_desired, self.ota_failed
        if not desired.version:
            return "none"
        if version_compare(desired.version, self.firmware_version) == 0:
            return "converge"
        if not desired.url or not desired.sha256:
            return "none"
        if (failed.version and version_compare(failed.version, desired.version) == 0
                and same_sha(failed.sha256, desired.sha256)):
            return "skip_failed"
        return "start"

    def _handle_ota_request(self, d: Delta, patch: dict[str, Any]) -> None:
        d.merge_ota(self.ota_desired)
        action = self._ota_decide()
        if action == "converge":
            self.ota_applied = self.ota_desired.copy()
            self.flash.store_target(*K_APPLIED, self.ota_applied)
            if self.ota_status != "idle" or self.ota_error:
                self.ota_status, self.ota_error = "idle", ""
                self._store_status()
            self._add_ota_trio(patch, self.ota_applied)
            self._add_ota_status(patch)
        elif action == "start":
            log.info("%s: update requested: %s -> %s", self.cfg.thing, self.firmware_version,
                     self.ota_desired.version)
            self.ota_job = self.ota_desired.copy()
            self.ota_status, self.ota_error = "downloading", ""
            self.installing = True  # the download starts once this message is handled
            self._add_ota_status(patch)

    def _handle_delta(self, out: list[Action], state: dict[str, Any] | None, version: object,
                      from_get: bool) -> None:
        if (isinstance(version, (int, float)) and not isinstance(version, bool)
                and 0 <= version < 9e15):
            v = int(version)
            if not from_get and self.have_delta_version and v <= self.last_delta_version:
                return  # stale
            self.last_delta_version = v
            self.have_delta_version = True
        fp = hash(orjson.dumps(state) if state is not None else b"{}") or 1
        if not from_get and fp == self.last_delta_fingerprint:
            return  # already handled
        self.last_delta_fingerprint = fp
        d = parse_delta(state, refused=self._refused,
                        relative_urls=self.cfg.firmware_base_url is not None)
        patch: dict[str, Any] = {}
        self._apply_settings(d, patch)
        self._reconcile_rejected(d, patch)
        if d.has_ota:
            self._handle_ota_request(d, patch)
        if patch:
            self._report(out, patch)

    def _handle_get_accepted(self, out: list[Action], doc: dict[str, Any]) -> None:
        state = doc_object(doc, "state")
        desired = doc_object(state, "desired")
        reported = doc_object(state, "reported")
        # The full desired OTA trio, so that a delta naming only part of it is complete.
        parse_delta(desired, relative_urls=self.cfg.firmware_base_url is not None).merge_ota(
            self.ota_desired)
        rejected = reported.get("rejected_keys") if reported is not None else None
        names = [k[:KEY_MAX] for k in rejected if isinstance(k, str)][:REJECTED_MAX] \
            if isinstance(rejected, list) else []
        self.reported_rejected = ",".join(names)
        self.reported_rejected_known = True
        self._handle_delta(out, doc_object(state, "delta"), doc.get("version"), True)

    def _handle_update_rejected(self, out: list[Action], doc: dict[str, Any]) -> None:
        token = doc_string(doc, "clientToken")
        if not self._token_is_ours(token):
            return
        log.info("%s: shadow update rejected: %s %s", self.cfg.thing, doc.get("code"),
                 doc.get("message"))
        self.errors += 1
        if not self._is_in_flight(token):
            return
        if rejection_is_retryable(doc.get("code")):
            return  # sent again when this attempt's wait ends (the backoff)
        self._finish_update(out)  # 400, 409, 413: the same request would be refused again

    def _handle_update_accepted(self, out: list[Action], doc: dict[str, Any]) -> None:
        token = doc_string(doc, "clientToken")
        confirms = bool(token) and token == self.boot_report_token
        if self._is_in_flight(token):
            self._finish_update(out)
        if not confirms or not self.pending_verify:
            return
        self.flash.pending = False  # slot_confirm: cancels the bootloader's rollback
        self.flash.boot_attempts = 0
        self.pending_verify = False
        self.confirm_deadline = None
        self._ota_confirmed()
        log.info("%s: firmware %s confirmed", self.cfg.thing, self.firmware_version)

    # ------------------------------------------------------------------ OTA install

    def _maybe_start_install(self, out: list[Action]) -> None:
        if self.installing and not any(isinstance(a, Download) for a in out):
            url = self.ota_job.url
            if self.cfg.firmware_base_url and "://" not in url:
                url = urljoin(self.cfg.firmware_base_url, url)
            log.info("%s: downloading %s from %s", self.cfg.thing, self.ota_job.version, url)
            out.append(Download(url, self.profile.download_bytes_per_s,
                                self.profile.download_fail_after))

    def _ota_report_status(self, out: list[Action]) -> None:
        patch: dict[str, Any] = {}
        self._add_ota_status(patch)
        self._report(out, patch)

    def on_download(self, now: float, data: bytes | None, error: str | None = None
                    ) -> list[Action]:
        """The body of the Download (or why it failed, as curl would say it)."""
        out: list[Action] = []
        if not self.running or not self.installing:
            return out
        self.clock = now
        if data is None or error is not None:
            self._ota_fail(out, f"download failed: {error or 'unknown error'}")
        elif len(data) > 16 * 1024 * 1024:
            self._ota_fail(out, "download failed: image larger than 16777216 bytes")
        else:
            self.ota_status = "verifying"
            self._ota_report_status(out)
            err = self._verify(data)
            if err:
                self._ota_fail(out, err)
            else:
                return out + self._activate(data)
        # failed: the device carries on with what queued up meanwhile
        self.errors += 1
        self.installing = False
        deferred, self.deferred = self.deferred, []
        for topic, payload in deferred:
            if self.installing:
                self.deferred.append((topic, payload))
            else:
                self._handle_message(out, now, topic, payload)
        return out

    def _verify(self, data: bytes) -> str:
        target = self.ota_job
        digest = hashlib.sha256(data).hexdigest()
        if not sha256_hex_is_valid(target.sha256) or digest != target.sha256.lower():
            return "sha256 mismatch"
        header = parse_image_header(data[:128])
        if header is None:
            return "bad image magic"
        if version_compare(header.version, target.version) != 0:
            return f"image version {header.version[:32]} != target {target.version[:32]}"
        return ""

    def _ota_fail(self, out: list[Action], error: str) -> None:
        log.info("%s: update to %s failed: %s", self.cfg.thing, self.ota_job.version, error)
        self.ota_error = error[:ERROR_MAX]
        self.ota_failed = self.ota_job.copy()
        self.flash.store_target(*K_FAILED, self.ota_failed)
        self.ota_status = "failed"
        self._store_status()
        self._ota_report_status(out)

    def _activate(self, data: bytes) -> list[Action]:
        out: list[Action] = []
        header = parse_image_header(data[:128])
        assert header is not None
        flash = self.flash
        self.ota_pending = self.ota_job.copy()
        flash.store_target(*K_PENDING, self.ota_pending)
        flash.previous = flash.active
        flash.active = Slot(header.version, header.crash_on_hw,
                            self.profile.crashes(header.version, self.cfg.hardware_rev))
        flash.pending = True
        flash.boot_attempts = 0
        flash.rollback_reason = ""
        self.ota_status = "applying"
        self._ota_report_status(out)
        log.info("%s: image %s verified and activated; rebooting", self.cfg.thing,
                 header.version)
        self._reboot(out, "ota")
        return out

    def _reboot(self, out: list[Action], why: str) -> None:
        """A software reboot: send the queued report (no retry can follow a reset), flush
        QoS 1, drop the link (last will), boot again."""
        self._send_queued(out)
        self.running = self.connected = self.installing = False
        self.deferred = []
        self.reset_reason = "sw_reboot"
        self.crash_streak = 0
        out.append(Restart(self.cfg.boot_delay_s, flush=True, reason=why))

    # ------------------------------------------------------------------ jobs

    def _start_next(self, out: list[Action]) -> None:
        self.jobs_state = "wait_start_next"
        self.pull_again = False
        self._publish(out, Topic.JOBS_START_NEXT, {"clientToken": self._token(),
                                                   "statusDetails": {}})

    def _job_update(self, out: list[Action], job_id: str, status: str,
                    details: dict[str, str]) -> None:
        self.current_job = job_id
        self.jobs_state = "wait_update"
        log.info("%s: job %s %s", self.cfg.thing, job_id, status)
        self._publish(out, Topic.JOBS_UPDATE, {"status": status, "statusDetails": details,
                                               "clientToken": self._token()}, job_id=job_id)

    def _jobs_on_connect(self, out: list[Action]) -> None:
        if self.reboot_job:
            self._finish_reboot_job(out)
        else:
            self._start_next(out)

    def _finish_reboot_job(self, out: list[Action]) -> None:
        self._job_update(out, self.reboot_job, "SUCCEEDED", {"reset_reason": self.reset_reason})

    def _apply_local(self, out: list[Action], d: Delta) -> None:
        patch: dict[str, Any] = {}
        self._apply_settings(d, patch)
        self.last_delta_fingerprint = 0
        if patch:
            self._report(out, patch)

    def _run_execution(self, out: list[Action], now: float, execution: dict[str, Any]) -> None:
        job_id = doc_string(execution, "jobId")
        job_doc = doc_object(execution, "jobDocument")
        operation = doc_string(job_doc, "operation")
        if job_id is None or not job_id_is_valid(job_id):
            self.errors += 1
            self.jobs_state = "idle"
            return
        if job_id == self.rejected_job:
            self.jobs_state = "idle"  # its update was refused: running it again would loop
            return
        if job_id == self.reboot_job:
            self._finish_reboot_job(out)  # the reboot already happened
            return
        if job_doc is None:
            self._job_update(out, job_id, "FAILED", {"reason": "missing jobDocument"})
        elif operation is None:
            self._job_update(out, job_id, "FAILED", {"reason": "missing operation"})
        elif operation == "reboot":
            self.flash.nvs_set(K_REBOOT_JOB, job_id)
            self.reboot_job = job_id
            log.info("%s: job %s: rebooting", self.cfg.thing, job_id)
            self._reboot(out, "job")
        elif operation == "diagnostic":
            self._job_update(out, job_id, "SUCCEEDED", {
                "heap_free": str(self.reading_heap_free(now)),
                "uptime_s": str(self.uptime_s(now)),
                "rssi": str(self.rssi),
                "temp_c": f"{self.reading_temp_c():.2f}",
                "firmware_version": self.firmware_version,
            })
        elif operation == "command":
            command = doc_string(job_doc, "command")
            if command in ("led_on", "led_off"):
                on = command == "led_on"
                self._apply_local(out, Delta(led_is_on=on))
                self._job_update(out, job_id, "SUCCEEDED", {"led_is_on": "true" if on else "false"})
            elif command == "fail":
                self._job_update(out, job_id, "FAILED", {"reason": "command failed as requested"})
            else:
                shown = (command if command is not None else "(missing)")[:64]
                self._job_update(out, job_id, "FAILED", {"reason": f"unknown command: {shown}"})
        elif operation == "config_update":
            config = doc_object(job_doc, "config")
            if config is None:
                self._job_update(out, job_id, "FAILED",
                                 {"reason": "config_update needs a config object"})
                return
            d = parse_delta(config, allow_ota=False, refused=self._refused)
            self._apply_local(out, d)
            if d.rejected_count:
                self._job_update(out, job_id, "FAILED", {"reason": d.config_error,
                                                         "rejected_keys": d.rejected_joined()})
            else:
                self._job_update(out, job_id, "SUCCEEDED", {"applied": "true"})
        else:
            self._job_update(out, job_id, "FAILED",
                             {"reason": f"unknown operation: {operation[:64]}"})

    def _jobs_finished(self, out: list[Action], job_id: str, accepted: bool,
                       doc: dict[str, Any]) -> None:
        if self.jobs_state != "wait_update" or job_id != self.current_job:
            return
        if not accepted:
            log.info("%s: update of job %s rejected: %s", self.cfg.thing, job_id,
                     doc_string(doc, "message") or "")
            self.rejected_job = job_id[:JOB_ID_MAX]
            self.errors += 1
        if job_id == self.reboot_job:
            self.reboot_job = ""
            self.flash.nvs_set(K_REBOOT_JOB, None)
        self.current_job = ""
        self._start_next(out)

    def _jobs_on_message(self, out: list[Action], now: float, kind: Topic, job_id: str,
                         doc: dict[str, Any]) -> None:
        execution = doc_object(doc, "execution")
        if kind is Topic.JOBS_NOTIFY_NEXT:
            if execution is None:
                return
            if self.jobs_state in ("idle", "wait_start_next"):
                # Waiting for start-next: its answer may be lost (the service restarted
                # after taking the request); asking again is safe (jobs.c does the same).
                self._start_next(out)
            else:
                self.pull_again = True
        elif kind is Topic.JOBS_START_NEXT_ACCEPTED:
            if self.jobs_state != "wait_start_next":
                return
            if execution is None:
                self.jobs_state = "idle"
                if self.pull_again:
                    self._start_next(out)
                return
            self._run_execution(out, now, execution)
        elif kind is Topic.JOBS_START_NEXT_REJECTED:
            if self.jobs_state == "wait_start_next":
                self.errors += 1
                self.jobs_state = "idle"
        elif kind is Topic.JOBS_UPDATE_ACCEPTED:
            self._jobs_finished(out, job_id, True, doc)
        elif kind is Topic.JOBS_UPDATE_REJECTED:
            self._jobs_finished(out, job_id, False, doc)

    # ------------------------------------------------------------------ inspection

    def reported_state(self) -> dict[str, Any]:
        """What the device would report in a full report now (for tests and the CLI)."""
        return orjson.loads(_dumps(self._full_reported()))


__all__ = [
    "Action",
    "Connect",
    "Device",
    "DeviceConfig",
    "Download",
    "DropConnection",
    "Flash",
    "Publish",
    "Restart",
    "ShadowUpdate",
    "Slot",
    "Subscribe",
    "url_is_valid",
]
