"""Console benchmark, headless with Pilot, on a generated 100,000-device SQLite registry.

- first useful frame: from creating the app until the device table shows its first rows
  (target <= 1 s);
- scroll: PageDown ten times, each until the new page's rows are loaded and drawn
  (target <= 50 ms a page);
- key latency: a key press in the device table until the first frame showing the moved
  cursor (a hook on the app's display; Pilot's press() waits for the whole app to go idle,
  which under load it never is), while the shadow service (the real ShadowService with its
  registry write-behind, on the bridge's thread as in the console) ingests 5,000 shadow
  updates/s (target p99 <= 100 ms).

Baselines in the same run: the same app on an empty registry with no load (first frame);
the same registry with no load (key latency); one cursor step within loaded rows
(scrolling: an empty table has nothing to scroll). Prints human lines and RSS, then JSON
lines; the last is the headline (key latency p99 under load).

    python bench/console.py [--devices 100000] [--rate 5000] [--presses 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from textual import events  # noqa: E402

from fleet_tui.config import Settings  # noqa: E402
from fleet_tui.registry.importer import import_fleet  # noqa: E402
from fleet_tui.registry.registry import Registry  # noqa: E402
from fleet_tui.sample_fleet import write_fleet  # noqa: E402
from fleet_tui.service.events import EventBus, PresenceChanged  # noqa: E402
from fleet_tui.service.shadows import ShadowService  # noqa: E402
from fleet_tui.service.topics import ShadowTopic, Topics  # noqa: E402
from fleet_tui.tui.app import FleetApp  # noqa: E402
from fleet_tui.tui.widgets.device_table import DeviceTable  # noqa: E402

DATA = ROOT / "bench" / ".data"
SIZE = (120, 40)
NO_PACING = False  # --no-gc-pacing


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fleet_db(devices: int, seed: int) -> Path:
    """A registry of ``devices`` generated devices, built once and cached in bench/.data."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"console-{devices}-{seed}.db"
    if not path.exists():
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            write_fleet(Path(tmp), devices, seed, with_images=False)
            partial = path.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            registry = Registry.open(f"sqlite:///{partial}")
            import_fleet(registry, Path(tmp))
            registry.close()
            partial.rename(path)
        print(f"built {path.name} in {time.perf_counter() - t0:.1f} s")
    return path


class ShadowLoad:
    """A RunnableService that feeds the real ShadowService ``rate`` reported-state updates a
    second (no broker: the MQTT client tops out well below this rate on these machines),
    with its durable write-behind to the registry and its events to the console."""

    def __init__(self, registry: Registry, things: list[str], rate: int) -> None:
        self.events = EventBus()
        self.shadows = ShadowService(registry, Topics(), events=self.events)
        self.things = things
        self.rate = rate
        self.sent = 0
        self.presence_share = 0.1  # of the updates also change presence (table rows patch)

    async def run(self, stop: asyncio.Event) -> None:
        async def publish(_batch: Any) -> None:
            return None

        flusher = asyncio.create_task(self.shadows.run(publish, stop))
        rng = random.Random(7)
        tick = 0.01
        per_tick = max(1, int(self.rate * tick))
        start = time.perf_counter()
        while not stop.is_set():
            for _ in range(per_tick):
                thing = rng.choice(self.things)
                body = {"state": {"reported": {"temp_c": round(rng.uniform(20, 80), 1),
                                               "led_is_on": rng.random() < 0.5}}}
                self.shadows.handle(ShadowTopic(thing, "", "update"), orjson.dumps(body))
                if rng.random() < self.presence_share:
                    self.events.emit(PresenceChanged(thing, rng.random() < 0.9, "bench", 0.0))
                self.sent += 1
            # Pace against the wall clock so a slow tick is caught up, not dropped.
            ahead = self.sent / self.rate - (time.perf_counter() - start)
            await asyncio.sleep(max(0.0, ahead))
        await flusher

    @property
    def accepted(self) -> int:
        return self.shadows.stats["accepted"]


async def wait_rows(app: FleetApp, timeout: float = 30.0) -> DeviceTable:
    table = app.query_one(DeviceTable)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if table.total == 0:
            return table
        top = int(table.scroll_y)
        if table.total and table.row_at(top) is not None and table.row_at(table.cursor):
            return table
        await asyncio.sleep(0.002)
    raise TimeoutError("the device table never showed rows")


def watch_frames(app: FleetApp) -> list[tuple[float, int, bool]]:
    """Every frame the app wrote (its ``_display`` hook, headless included): when, the
    table's cursor it showed, and whether the rows around the cursor were loaded. Judging a
    key by the state its frame showed: polling the cursor and then waiting for "the next
    frame" missed the frame when it came first, and took a later one (up to the next live
    update, 250 ms on)."""
    frames: list[tuple[float, int, bool]] = []
    display = app._display
    tables: list[DeviceTable] = []

    def recorded(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        if not tables:
            found = app.query(DeviceTable)
            if not found:
                return
            tables.append(found.first())
        table = tables[0]
        top = int(table.scroll_y)
        loaded = table.row_at(top) is not None and table.row_at(table.cursor) is not None
        frames.append((time.perf_counter(), table.cursor, loaded))

    app._display = recorded  # type: ignore[method-assign]
    return frames


async def key_to_render(app: FleetApp, table: DeviceTable, key: str,
                        loaded: bool = False) -> float:
    """ms from a key event reaching the app's driver to the first frame showing its effect:
    the cursor moved (and, with ``loaded``, the new page's rows there, not "…"
    placeholders). Pilot's press() waits for the whole app to go idle, which under load it
    never is."""
    frames = app.frames  # type: ignore[attr-defined]
    before = table.cursor
    seen = len(frames)
    event = events.Key(key, None)
    event.set_sender(app)
    t0 = time.perf_counter()
    assert app._driver is not None
    app._driver.send_message(event)
    deadline = t0 + 10
    while time.perf_counter() < deadline:
        while seen < len(frames):
            at, cursor, rows = frames[seen]
            seen += 1
            if cursor != before and (rows or not loaded):
                return (at - t0) * 1000
        await asyncio.sleep(0.0005)
    raise TimeoutError(f"{key} had no effect within 10 s")


async def measure(registry: Registry, load: ShadowLoad | None, presses: int) -> dict[str, Any]:
    settings = Settings(db="sqlite://")
    t0 = time.perf_counter()
    app = FleetApp(settings, registry, load, pace_gc=not NO_PACING)
    app.animation_level = "none"
    out: dict[str, Any] = {}
    async with app.run_test(size=SIZE) as pilot:
        app.frames = watch_frames(app)  # type: ignore[attr-defined]
        await wait_rows(app)
        await pilot.pause()
        out["first_frame_ms"] = (time.perf_counter() - t0) * 1000
        await pilot.press("tab")
        await pilot.pause()
        pages = [0.0]
        table = app.query_one(DeviceTable)
        if not table.total:
            presses = 0  # nothing to scroll or move in an empty table
        else:
            pages.clear()
        for _ in range(10 if table.total else 0):
            pages.append(await key_to_render(app, table, "pagedown", loaded=True))
        out["page_ms"] = statistics.mean(pages)
        out["page_max_ms"] = max(pages)
        await pilot.press("home")
        await pilot.pause()
        if load is not None:
            await asyncio.sleep(1.0)  # let the load reach its rate
            sent0, t_load = load.sent, time.perf_counter()
        latencies = []
        table = app.query_one(DeviceTable)
        for i in range(presses):
            latencies.append(await key_to_render(app, table, "down" if i % 2 == 0 else "up"))
            await asyncio.sleep(0.02)
        if load is not None:
            out["ingest_per_s"] = (load.sent - sent0) / (time.perf_counter() - t_load)
        latencies.sort() if latencies else latencies.append(0.0)
        out["key_p50_ms"] = latencies[len(latencies) // 2]
        out["key_p99_ms"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        out["rss_mb"] = rss_mb()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=int, default=5000, help="shadow updates/s of the load")
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--no-gc", action="store_true", help="diagnosis: collector off")
    parser.add_argument("--no-gc-pacing", action="store_true",
                        help="diagnosis: the console's collector pacing off")
    parser.add_argument("--switch-interval", type=float, metavar="S",
                        help="diagnosis: sys.setswitchinterval (GIL hand-over, default 5 ms)")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.no_gc:
        gc.disable()
    global NO_PACING
    NO_PACING = args.no_gc_pacing

    source = fleet_db(args.devices, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Registry.open(f"sqlite:///{Path(tmp) / 'empty.db'}")
        baseline = asyncio.run(measure(empty, None, 0))  # an empty table has no cursor to move
        empty.close()
        copy = Path(tmp) / "fleet.db"
        shutil.copy(source, copy)  # the load writes shadows: keep the cached fleet clean
        registry = Registry.open(f"sqlite:///{copy}")
        things = registry.device_ids()
        idle = asyncio.run(measure(registry, None, args.presses))
        load = ShadowLoad(registry, things, args.rate)
        loaded = asyncio.run(measure(registry, load, args.presses))
        with contextlib.suppress(Exception):
            registry.close()

    print(f"registry: {len(things)} devices; load: {args.rate} shadow updates/s requested, "
          f"{loaded.get('ingest_per_s', 0):.0f}/s offered during the key presses, "
          f"{load.accepted} accepted in total")
    rows = [
        ("first useful frame", idle["first_frame_ms"], baseline["first_frame_ms"], "ms", 1000),
        ("scroll, per page (10 pages)", idle["page_ms"], idle["key_p50_ms"], "ms", 50),
        ("key press to render p50 (load)", loaded["key_p50_ms"], idle["key_p50_ms"], "ms",
         None),
        ("key press to render p99 (load)", loaded["key_p99_ms"], idle["key_p99_ms"], "ms",
         100),
    ]
    lines = []
    for name, value, base, unit, target in rows:
        ratio = value / base if base else float("inf")
        goal = f"target <= {target} {unit}" if target else ""
        verdict = ("" if target is None else "  ok" if value <= target else "  MISSED")
        against = ("no load" if "key" in name else "1 row" if "scroll" in name else "empty")
        print(f"{name:<32} {value:9.1f} {unit}   {against:>7} {base:8.1f} {unit}   ratio "
              f"{ratio:6.2f}   {goal}{verdict}")
        metric = name.split(" (")[0].replace(" ", "_").replace(",", "")
        lines.append(json.dumps({"bench": "console", "metric": metric, "value": round(value, 2),
                                 "baseline": round(base, 2), "ratio": round(ratio, 3)}))
    print(f"scroll worst page {idle['page_max_ms']:.1f} ms; RSS: empty {baseline['rss_mb']:.0f} MB,"
          f" 100k idle {idle['rss_mb']:.0f} MB, under load {loaded['rss_mb']:.0f} MB")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
