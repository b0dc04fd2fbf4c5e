"""Registry benchmark on a generated fleet (default 1,000,000 devices) in SQLite.

Each figure stands beside the same work written by hand in raw SQL with sqlite3 in the
same run. Prints human-readable lines, then one JSON line per metric; the last line is the
headline (the query-language path against hand-written SQL for a dynamic-group count).

    python bench/registry.py [--devices N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_tui.domain.query import reported_attributes  # noqa: E402
from fleet_tui.domain.version import version_key  # noqa: E402
from fleet_tui.registry.importer import import_fleet, read_devices  # noqa: E402
from fleet_tui.registry.registry import Registry, tag_tuples  # noqa: E402
from fleet_tui.sample_fleet import write_fleet  # noqa: E402

DATA = ROOT / "bench" / ".data"


def timed_pair(ours: Callable[[], object], base: Callable[[], object], repeat: int = 15
               ) -> tuple[tuple[float, object], tuple[float, object]]:
    """Median wall time in ms of ``repeat`` runs of each side (after one warm-up) and its
    last result. The two sides alternate, so both see the same load on a shared machine
    (timing one side after the other skewed sub-millisecond ratios)."""
    results = [ours(), base()]
    times: list[list[float]] = [[], []]
    for _ in range(repeat):
        for side, fn in enumerate((ours, base)):
            t0 = time.perf_counter()
            results[side] = fn()
            times[side].append((time.perf_counter() - t0) * 1000)
    return ((statistics.median(times[0]), results[0]),
            (statistics.median(times[1]), results[1]))


def report(metric: str, value: float, baseline: float, unit: str, lines: list[str]) -> dict:
    ratio = value / baseline if baseline else float("inf")
    print(f"{metric:<34} fleet-tui {value:10.2f} {unit:<10} raw SQL {baseline:10.2f} {unit:<10}"
          f" ratio {ratio:5.2f}")
    line = {"bench": "registry", "metric": metric, "value": round(value, 3),
            "baseline": round(baseline, 3), "ratio": round(ratio, 3)}
    lines.append(json.dumps(line))
    return line


def raw_import(db: Path, fleet: Path, schema_from: Path) -> float:
    """The baseline import: the same rows via plain sqlite3 executemany, same schema."""
    src = sqlite3.connect(schema_from)
    ddl = [r[0] for r in src.execute(
        "select sql from sqlite_master where sql is not null and name not like 'sqlite_%' "
        "and name != 'alembic_version'")]
    src.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-131072")
    tables = [d for d in ddl if d.upper().startswith("CREATE TABLE")]
    indexes = [d for d in ddl if d.upper().startswith("CREATE INDEX")]
    for d in tables:
        conn.execute(d)
    t0 = time.perf_counter()
    devs, tags = [], []
    with conn:
        for dev in read_devices(fleet / "devices.jsonl"):
            devs.append((dev.id, dev.hardware_rev, dev.firmware_version,
                         version_key(dev.firmware_version), False, 0.0))
            tags.extend(tag_tuples(dev.id, "o", dev.tags))
            tags.extend(tag_tuples(dev.id, "r", reported_attributes(dev.reported)))
            if len(devs) >= 20000:
                conn.executemany("insert into device (id, hardware_rev, firmware_version, "
                                 "fw_key, online, created_at) values (?,?,?,?,?,?)", devs)
                conn.executemany("insert into tag values (?,?,?,?,?,?)", tags)
                devs, tags = [], []
        conn.executemany("insert into device (id, hardware_rev, firmware_version, fw_key, "
                         "online, created_at) values (?,?,?,?,?,?)", devs)
        conn.executemany("insert into tag values (?,?,?,?,?,?)", tags)
        for d in indexes:
            conn.execute(d)
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n = args.devices
    fleet = DATA / f"fleet-{n}-{args.seed}"
    if not (fleet / "devices.jsonl").exists():
        print(f"generating {n} devices into {fleet} ...")
        write_fleet(fleet, n, args.seed, with_images=False)
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        registry = Registry.open(f"sqlite:///{db}")
        t0 = time.perf_counter()
        result = import_fleet(registry, fleet / "devices.jsonl")
        ours_s = time.perf_counter() - t0
        import_fleet(registry, fleet / "groups.json")
        raw_s = raw_import(Path(tmp) / "raw.db", fleet, db)
        print(f"{result}: {ours_s:.1f} s; raw sqlite3 {raw_s:.1f} s")
        report("import_devices_per_s", n / ours_s, n / raw_s, "dev/s", lines)

        raw = sqlite3.connect(db)
        raw.execute("PRAGMA cache_size=-131072")
        q1 = 'tag.deployment_ring = "canary"'
        (ms, ours), (base, theirs) = timed_pair(
            lambda: registry.count_devices(where=q1),
            lambda: raw.execute(
            "select count(*) from tag where source='o' and key='deployment_ring' "
            "and value='canary'").fetchone()[0])
        assert ours == theirs, (ours, theirs)
        report("dynamic_count_tag_ms", ms, base, "ms", lines)

        q2 = ('location = "factory-A" and firmware_version < 2.2.0 '
              'and not tag.deployment_ring in ("canary")')
        (ms, ours), (base, theirs) = timed_pair(
            lambda: registry.count_devices(where=q2),
            lambda: raw.execute(
            "select count(*) from device d join tag l on l.device_id = d.id and l.source='r' "
            "and l.key='location' and l.value='factory-A' where d.fw_key < ? and not exists "
            "(select 1 from tag r where r.device_id = d.id and r.source='o' "
            "and r.key='deployment_ring' and r.value='canary')",
            (version_key("2.2.0"),)).fetchone()[0])
        assert ours == theirs, (ours, theirs)
        report("dynamic_count_compound_ms", ms, base, "ms", lines)

        lines_of = [f"{site}-l{i}" for site in ("fra-1", "ber-1", "muc-1") for i in (1, 2, 3)]
        marks = ",".join("?" * len(lines_of))
        (ms, ours), (base, theirs) = timed_pair(
            lambda: registry.count_devices(group="eu-central"),
            lambda: raw.execute(
            f"select count(*) from tag where source='o' and key='line' and value in ({marks})",
            lines_of).fetchone()[0])
        assert ours == theirs, (ours, theirs)
        report("hierarchy_3_level_count_ms", ms, base, "ms", lines)

        offset = 5000 * 50
        (ms, ours), (base, theirs) = timed_pair(
            lambda: registry.list_devices(offset=offset, limit=50),
            lambda: raw.execute(
            "select id, hardware_rev, firmware_version, online, last_seen, health from device "
            "order by id limit 50 offset ?", (offset,)).fetchall())
        assert [r.id for r in ours] == [r[0] for r in theirs]  # type: ignore[union-attr,index]
        report("paged_list_page_5000_ms", ms, base, "ms", lines)

        (ms, _), (base, _) = timed_pair(
            lambda: registry.list_devices(group="eu-central", offset=5000, limit=50),
            lambda: raw.execute(
            f"select d.id from device d join tag t on t.device_id = d.id and t.source='o' and "
            f"t.key='line' and t.value in ({marks}) order by d.id limit 50 offset 5000",
            lines_of).fetchall())
        report("group_paged_list_ms", ms, base, "ms", lines)
        raw.close()
        registry.close()
    # The headline last: the query-language path for a dynamic-group count on the fleet.
    lines.append(lines.pop(1))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
