"""Generate a realistic fleet of any size in the import format (see sample_data/README.md).

Same seed and size, same files: demos, tests and benchmarks all build on this shape.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fleet_tui.domain.firmware_image import FirmwareImage

REGIONS: dict[str, list[str]] = {
    "eu-west": ["dub-1", "ams-1"],
    "eu-central": ["fra-1", "ber-1", "muc-1"],
    "us-east": ["nyc-1", "bos-1"],
    "apac": ["sin-1", "tyo-1"],
}
LINES_PER_SITE = 3
HARDWARE = (("rev-a", 30), ("rev-b", 45), ("rev-c", 25))
OTA_KEYS = ["target_version", "ota_url", "ota_sha256"]


@dataclass(frozen=True)
class ReleaseSpec:
    version: str
    hardware_revs: tuple[str, ...]
    desired_keys: tuple[str, ...]
    notes: str
    crash_on_hw: str = ""


RELEASES = (
    ReleaseSpec("2.0.4", ("rev-a", "rev-b", "rev-c"), ("led_is_on",), "LTS baseline"),
    ReleaseSpec("2.1.2", ("rev-a", "rev-b", "rev-c"), ("led_is_on", "telemetry_interval_s"),
                "configurable telemetry interval"),
    ReleaseSpec("2.2.0", ("rev-a", "rev-b", "rev-c"), ("led_is_on", "telemetry_interval_s"),
                "TLS session resumption, smaller heap footprint"),
    ReleaseSpec("2.3.0", ("rev-b", "rev-c"), ("led_is_on", "telemetry_interval_s", "log_level"),
                "new radio driver; rev-a's flash is too small"),
    ReleaseSpec("2.4.0", ("rev-a", "rev-b", "rev-c"),
                ("led_is_on", "telemetry_interval_s", "log_level"),
                "watchdog rework (crash-loops on rev-b: the bad-canary drill)",
                crash_on_hw="rev-b"),
    ReleaseSpec("2.4.1", ("rev-a", "rev-b", "rev-c"),
                ("led_is_on", "telemetry_interval_s", "log_level"), "2.4.0 with the rev-b fix"),
)
# Firmware running in the fleet today, by weight (2.3.0 only where the hardware supports it).
FLEET_FIRMWARE = (("2.0.4", 10), ("2.1.2", 30), ("2.2.0", 45), ("2.3.0", 15))
RINGS = (("canary", 1), ("early", 9), ("general", 90))


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _sites() -> list[tuple[str, str, str]]:
    """(region, site, factory letter) in a fixed order."""
    out, letter = [], ord("A")
    for region, sites in REGIONS.items():
        for site in sites:
            out.append((region, site, chr(letter)))
            letter += 1
    return out


def devices(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    sites = _sites()
    width = max(6, len(str(n)))
    for i in range(1, n + 1):
        region, site, letter = sites[rng.randrange(len(sites))]
        hw = _pick(rng, HARDWARE)
        fw = _pick(rng, FLEET_FIRMWARE)
        if fw == "2.3.0" and hw == "rev-a":
            fw = "2.2.0"
        yield {
            "id": f"esp32-{i:0{width}d}",
            "hardware_rev": hw,
            "firmware_version": fw,
            "tags": {
                "region": region,
                "site": site,
                "line": f"{site}-l{rng.randrange(LINES_PER_SITE) + 1}",
                "deployment_ring": _pick(rng, RINGS),
            },
            "reported": {"tags": {"location": f"factory-{letter}"}},
        }


def groups(device_ids: list[str], seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    out: list[dict[str, Any]] = []
    for region, sites in REGIONS.items():
        out.append({"name": region, "kind": "folder", "description": f"region {region}"})
        for site in sites:
            out.append({"name": site, "kind": "folder", "parent": region,
                        "description": f"site {site}"})
            for line in range(1, LINES_PER_SITE + 1):
                name = f"{site}-l{line}"
                out.append({"name": name, "kind": "dynamic", "parent": site,
                            "query": f'tag.line = "{name}"'})
    sample = sorted(rng.sample(device_ids, min(13, len(device_ids))))
    out += [
        {"name": "lab-bench", "kind": "static", "members": sample[:8],
         "description": "devices on the lab bench"},
        {"name": "field-returns", "kind": "static", "members": sample[8:],
         "description": "units sent back by customers"},
        {"name": "canary-ring", "kind": "dynamic", "query": 'tag.deployment_ring = "canary"'},
        {"name": "early-ring", "kind": "dynamic", "query": 'tag.deployment_ring = "early"'},
        {"name": "legacy-firmware", "kind": "dynamic", "query": "firmware_version < 2.1.0"},
        {"name": "rev-c-fleet", "kind": "dynamic", "query": 'hardware_rev = "rev-c"'},
        {"name": "factory-A", "kind": "dynamic", "query": 'location = "factory-A"'},
        {"name": "eu-not-canary", "kind": "dynamic",
         "query": 'tag.region ~ "eu-*" and not tag.deployment_ring in ("canary")'},
    ]
    return out


def firmware_images() -> dict[str, FirmwareImage]:
    return {r.version: FirmwareImage.build(r.version, r.crash_on_hw) for r in RELEASES}


def releases() -> list[dict[str, Any]]:
    images = firmware_images()
    return [
        {
            "version": r.version,
            "url": f"firmware/fleet-fw-{r.version}.bin",
            "sha256": images[r.version].sha256,
            "size": len(images[r.version].to_bytes()),
            "hardware_revs": list(r.hardware_revs),
            "desired_keys": sorted({*r.desired_keys, *OTA_KEYS}),
            "notes": r.notes,
        }
        for r in RELEASES
    ]


def write_fleet(out: Path, n: int, seed: int = 7, with_images: bool = True) -> int:
    """Write devices.jsonl, groups.json, releases.json (and firmware images) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    with (out / "devices.jsonl").open("wb") as fh:
        for dev in devices(n, seed):
            ids.append(dev["id"])
            fh.write(orjson.dumps(dev) + b"\n")
    (out / "groups.json").write_bytes(orjson.dumps(groups(ids, seed), option=orjson.OPT_INDENT_2))
    (out / "releases.json").write_bytes(orjson.dumps(releases(), option=orjson.OPT_INDENT_2))
    if with_images:
        (out / "firmware").mkdir(exist_ok=True)
        for version, image in firmware_images().items():
            (out / "firmware" / f"fleet-fw-{version}.bin").write_bytes(image.to_bytes())
    return n
