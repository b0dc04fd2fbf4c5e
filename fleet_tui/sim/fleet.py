"""N simulated devices in one process, each with its own MQTT connection and last will.

Each :class:`SimDevice` runs one :class:`~fleet_tui.sim.device.Device` state machine over
one :class:`~fleet_tui.sim.mqtt_lite.MqttClient`; everything is callbacks and timer
handles on one event loop (a task only while a device connects, downloads or reboots).
Reconnects use the firmware's backoff (1, 2, 4 ... 30 s, with jitter); the initial
connects are paced (``connect_rate`` per second) so that 10,000 devices do not hit the
broker in the same millisecond.

Measured on this 2-core machine with mosquitto 2.0.11 on the same box
(``bench/sim_scale.py``, 10,000 devices, each phase in its own process):

- 10,000/10,000 connections held (the broker counts them too); all up in 6 s (paced);
- telemetry every 60 s: 163 msg/s, 1.2 % of one core (the bare-connection baseline doing
  only keepalive: 1.3 %), broker 0.6 %; RSS +107 MB, 10.7 MB per 1,000 devices (bare
  connections: 3.8 MB per 1,000);
- telemetry every 1 s: 10,004 msg/s published, 28 % of one core (broker 10 %).

The client choice is explained in :mod:`fleet_tui.sim.mqtt_lite`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from fleet_tui.sim.device import (
    Action,
    Connect,
    Device,
    DeviceConfig,
    Download,
    DropConnection,
    Publish,
    Restart,
    Subscribe,
)
from fleet_tui.sim.http import DownloadError, http_get
from fleet_tui.sim.mqtt_lite import MqttClient, MqttError, Will
from fleet_tui.sim.profiles import ProfileSpec, assign

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
KEEPALIVE_S = 30
POWER_OFF_FLUSH_S = 2.0


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class SimDevice:
    """Carries out one device's actions: the I/O half of the simulator."""

    def __init__(self, fleet: Fleet, device: Device) -> None:
        self.fleet = fleet
        self.device = device
        self.thing = device.cfg.thing
        self.client: MqttClient | None = None
        self.conn_task: asyncio.Task[None] | None = None  # connecting / reconnecting
        self.work_task: asyncio.Task[None] | None = None  # a download or a reset
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.stopped = False

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    # ------------------------------------------------------------------ actions

    def run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                self._publish(action)
            elif isinstance(action, Subscribe):
                if self.client is not None and self.client.connected:
                    fut = self.client.subscribe([(f, action.qos) for f in action.filters])
                    fut.add_done_callback(_retrieve)
            elif isinstance(action, Connect):
                self._spawn_conn(self._connect_loop(initial=True))
            elif isinstance(action, Download):
                self._spawn_work(self._download(action))
            elif isinstance(action, Restart):
                self.fleet.stats["restarts"] += 1
                self._cancel("conn_task")
                self._spawn_work(self._restart(action))
            elif isinstance(action, DropConnection):
                self.fleet.stats["drops"] += 1
                self._drop_link()
                self._spawn_conn(self._reconnect_after(action.offline_s))
        self._reschedule()

    def _publish(self, p: Publish) -> None:
        client = self.client
        if client is None or not client.connected:
            self.fleet.stats["dropped_publishes"] += 1
            return
        try:
            fut = client.publish(p.topic, p.payload, p.qos, p.retain)
        except MqttError:
            self.fleet.stats["dropped_publishes"] += 1
            return
        if fut is not None:
            fut.add_done_callback(_retrieve)
        self.fleet.stats["published"] += 1

    def _cancel(self, slot: str) -> None:
        task: asyncio.Task[None] | None = getattr(self, slot)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        setattr(self, slot, None)

    def _spawn_conn(self, coro: Any) -> None:
        self._cancel("conn_task")
        if self.stopped:
            coro.close()
            return
        self.conn_task = asyncio.get_running_loop().create_task(coro)

    def _spawn_work(self, coro: Any) -> None:
        self._cancel("work_task")  # a reset supersedes a download in progress
        if self.stopped:
            coro.close()
            return
        self.work_task = asyncio.get_running_loop().create_task(coro)

    def _reschedule(self) -> None:
        when = None if self.stopped else self.device.next_wakeup()
        if when == self.timer_at:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_at = when
        if when is not None:
            self.timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = None
        self.run(self.device.tick(self.fleet.now()))

    # ------------------------------------------------------------------ connection

    def _drop_link(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            if client.connected:
                self.fleet.connected -= 1
            client.abort()

    async def _connect_loop(self, initial: bool = False) -> None:
        delay = RECONNECT_MIN_S
        if initial:
            await self.fleet.pace_connect()
        while not self.stopped and self.device.running:
            try:
                topic, payload = self.device.will
                client = await MqttClient.connect(
                    self.fleet.host, self.fleet.port, self.thing, keepalive=self.fleet.keepalive,
                    will=Will(topic, payload, 1, True), on_message=self._on_message,
                    on_lost=self._on_lost, tls=self.fleet.tls_for(self.thing))
            except (MqttError, OSError) as err:
                self.fleet.stats["connect_failures"] += 1
                log.debug("%s: connect failed: %s; retrying in %.1f s", self.thing, err, delay)
                await asyncio.sleep(delay * self.fleet.jitter.uniform(0.8, 1.2))
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            if self.stopped or not self.device.running:
                client.abort()
                return
            self.client = client
            self.fleet.connected += 1
            self.fleet.stats["connects"] += 1
            self.run(self.device.on_connect(self.fleet.now()))
            return

    async def _reconnect_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._connect_loop()

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.fleet.stats["received"] += 1
        self.run(self.device.on_message(self.fleet.now(), topic, payload))

    def _on_lost(self, exc: Exception | None) -> None:
        if exc is None:
            return  # we closed it ourselves
        self.fleet.connected -= 1
        self.fleet.stats["lost"] += 1
        self.client = None
        log.debug("%s: connection lost: %s", self.thing, exc)
        self.run(self.device.on_disconnect(self.fleet.now()))
        if not self.stopped and self.device.running:
            self._spawn_conn(
                self._reconnect_after(RECONNECT_MIN_S * self.fleet.jitter.uniform(0.8, 1.2)))

    # ------------------------------------------------------------------ OTA and resets

    async def _download(self, action: Download) -> None:
        self.fleet.stats["downloads"] += 1
        try:
            data: bytes | None = await http_get(action.url, bytes_per_s=action.bytes_per_s,
                                                fail_after=action.fail_after)
            error = None
        except DownloadError as err:
            data, error = None, str(err)
        except Exception as err:  # never let a download kill the device
            data, error = None, f"{type(err).__name__}: {err}"
        self.run(self.device.on_download(self.fleet.now(), data, error))

    async def _restart(self, action: Restart) -> None:
        client = self.client
        if action.flush and client is not None and client.connected:
            await client.wait_unacked(3.0)
        self._drop_link()  # no DISCONNECT: the broker publishes the last will
        self._reschedule()
        await asyncio.sleep(action.delay_s)
        self.run(self.device.boot(self.fleet.now()))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.run(self.device.power_on(self.fleet.now()))

    async def stop(self) -> None:
        """Clean power-off: retained offline presence, then DISCONNECT."""
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._cancel("conn_task")
        self._cancel("work_task")
        client, self.client = self.client, None
        if client is None or not client.connected:
            return
        self.fleet.connected -= 1
        for action in self.device.power_off(self.fleet.now()):
            if isinstance(action, Publish):
                with contextlib.suppress(MqttError):
                    fut = client.publish(action.topic, action.payload, action.qos, action.retain)
                    if fut is not None:
                        fut.add_done_callback(_retrieve)
        await client.wait_unacked(POWER_OFF_FLUSH_S)
        await client.disconnect()


class Fleet:
    """``async with Fleet(configs, host, port) as fleet: ...`` or start()/stop()."""

    def __init__(self, configs: Iterable[DeviceConfig], host: str, port: int, *,
                 profiles: list[ProfileSpec] | None = None, seed: int | str = 7,
                 keepalive: int = KEEPALIVE_S, connect_rate: float = 1000.0,
                 tls: Callable[[str], ssl.SSLContext | None] | None = None) -> None:
        self.host, self.port = host, port
        # thing -> its TLS context (a per-device client certificate), or None for plain TCP
        self.tls_for: Callable[[str], ssl.SSLContext | None] = tls or (lambda _thing: None)
        self.seed = seed
        self.keepalive = keepalive
        self.connect_rate = connect_rate
        self.stats: Counter[str] = Counter()
        self.jitter = random.Random(f"{seed}/net")  # reconnect timing: not device behaviour
        self.connected = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0
        self._next_connect = 0.0
        specs = profiles or []
        self.devices: dict[str, SimDevice] = {}
        for cfg in configs:
            if cfg.thing in self.devices:
                raise ValueError(f"duplicate device id {cfg.thing!r}")
            device = Device(cfg, rng=random.Random(f"{seed}/{cfg.thing}"),
                            profile=assign(specs, seed, cfg.thing))
            self.devices[cfg.thing] = SimDevice(self, device)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, thing: str) -> SimDevice:
        return self.devices[thing]

    def profile_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for sim in self.devices.values():
            counts.update(sim.device.profile.names)
        return counts

    async def pace_connect(self) -> None:
        """Spread the initial connects at ``connect_rate`` per second."""
        if self.connect_rate <= 0:
            return
        now = self.now()
        slot = max(now, self._next_connect)
        self._next_connect = slot + 1.0 / self.connect_rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()
        for sim in self.devices.values():
            sim.device.wall_offset = self._wall_offset
            sim.start()

    async def wait_connected(self, count: int | None = None, timeout: float = 60.0) -> bool:
        want = len(self.devices) if count is None else count
        deadline = self.now() + timeout
        while self.connected < want:
            if self.now() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        sims = list(self.devices.values())
        for i in range(0, len(sims), 1000):  # bounded bursts of DISCONNECTs
            await asyncio.gather(*(s.stop() for s in sims[i:i + 1000]),
                                 return_exceptions=True)

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ------------------------------------------------------------------ fleet definition


def read_fleet_file(path: Path) -> Iterator[dict[str, Any]]:
    """Device rows of an import file (``devices.jsonl``: one JSON object a line)."""
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: {err}") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise ValueError(f"{path}:{lineno}: expected an object with an \"id\"")
            yield row


def device_config(row: dict[str, Any], *, id_prefix: str = "", **options: Any) -> DeviceConfig:
    """A device of the simulator from a fleet row (the import format)."""
    raw_reported = row.get("reported")
    reported: dict[str, Any] = raw_reported if isinstance(raw_reported, dict) else {}
    raw_tags = reported.get("tags")
    tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
    raw_location = tags.get("location")
    return DeviceConfig(
        thing=f"{id_prefix}{row['id']}",
        hardware_rev=str(row.get("hardware_rev") or reported.get("hardware_rev") or "rev-a"),
        firmware_version=str(row.get("firmware_version")
                             or reported.get("firmware_version") or "2.0.4"),
        location=raw_location if isinstance(raw_location, str) else "",
        **options,
    )
