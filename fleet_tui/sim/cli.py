"""``fleet-tui sim``: run a simulated fleet against a broker until SIGINT/SIGTERM.

    fleet-tui sim --devices 500 --broker 127.0.0.1:1883 --profile flaky:0.02 \\
        --profile crash-loop=2.4.1/rev-c:0.05 --seed 7 \\
        --from-registry sample_data/devices.jsonl --firmware-base-url http://127.0.0.1:8080/

Devices take their ids, hardware, factory firmware and location from the fleet file
(default: the sample fleet generator, ``fleet_tui.sample_fleet.devices(N, seed)``, which
with the default seed is ``sample_data/devices.jsonl``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_tui.config import ConfigError, Settings, parse_broker, tls_context
from fleet_tui.sim.device import DeviceConfig
from fleet_tui.sim.fleet import Fleet, device_config, read_fleet_file
from fleet_tui.sim.profiles import PROFILES, ProfileError, parse_profiles

STATUS_EVERY_S = 10.0


def register(sub: Any) -> None:
    """Add ``sim`` to the ``fleet-tui`` sub-commands."""
    p = sub.add_parser(
        "sim", help="run simulated devices (shadow, OTA, jobs, telemetry) against a broker",
        description="Run N simulated ESP32 devices in one process, each with its own MQTT "
                    "connection and last will, speaking the firmware's protocol.")
    p.add_argument("--devices", "-n", type=int, default=None,
                   help="number of devices (default: all of --from-registry, else 100)")
    p.add_argument("--broker", dest="sim_broker", metavar="HOST:PORT",
                   help="MQTT broker (default: the configured broker)")
    p.add_argument("--profile", action="append", metavar="NAME[=PARAM][:SHARE]",
                   help=f"failure profile, repeatable; one of {', '.join(PROFILES)}, or none. "
                        "SHARE is the fraction of devices (default 1)")
    p.add_argument("--seed", type=int, default=7, help="fleet shape and profile seed (7)")
    p.add_argument("--from-registry", type=Path, metavar="FILE.jsonl",
                   help="device rows in the import format (e.g. sample_data/devices.jsonl)")
    p.add_argument("--id-prefix", default="", help="prepended to every device id")
    p.add_argument("--telemetry-interval", type=int, default=60, metavar="S",
                   help="telemetry interval until the shadow sets one (60)")
    p.add_argument("--firmware-base-url", metavar="URL",
                   help="resolve relative ota_url values against this URL")
    p.add_argument("--confirm-timeout", type=float, default=30.0, metavar="S",
                   help="roll back an updated image not confirmed within S seconds (30)")
    p.add_argument("--shadow-retry-timeout", type=float, default=5.0, metavar="S",
                   help="resend an unanswered shadow update (same clientToken) after S "
                        "seconds, doubling per attempt (5)")
    p.add_argument("--boot-delay", type=float, default=0.5, metavar="S",
                   help="seconds a reboot keeps the device offline (0.5)")
    p.add_argument("--connect-rate", type=float, default=1000.0, metavar="N",
                   help="initial connections per second (1000; 0: unpaced)")
    p.add_argument("--shadow-prefix", help="shadow/jobs topic prefix (default: settings)")
    p.add_argument("--fleet-prefix", help="presence/telemetry prefix (default: settings)")
    p.add_argument("--tls-cert-dir", type=Path, metavar="DIR",
                   help="TLS with a client certificate per device: DIR/ID.crt and DIR/ID.key "
                        "(CA and host check from the [tls] settings)")
    p.add_argument("--log-level", default="warning",
                   choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=cmd_sim)


def build_configs(args: argparse.Namespace, settings: Settings) -> list[DeviceConfig]:
    if args.devices is not None and args.devices < 1:
        raise ConfigError("--devices must be at least 1")
    if not 1 <= args.telemetry_interval <= 86400:
        raise ConfigError("--telemetry-interval must be 1..86400")
    if args.from_registry is not None:
        if not args.from_registry.is_file():
            raise ConfigError(f"--from-registry {args.from_registry}: no such file")
        rows: Any = read_fleet_file(args.from_registry)
        if args.devices is not None:
            rows = itertools.islice(rows, args.devices)
    else:
        from fleet_tui.sample_fleet import devices

        rows = devices(args.devices or 100, args.seed)
    options = {
        "shadow_prefix": args.shadow_prefix or settings.shadow_prefix,
        "fleet_prefix": args.fleet_prefix or settings.fleet_prefix,
        "telemetry_interval_s": args.telemetry_interval,
        "confirm_timeout_s": args.confirm_timeout,
        "boot_delay_s": args.boot_delay,
        "shadow_retry_s": args.shadow_retry_timeout,
        "firmware_base_url": args.firmware_base_url,
    }
    try:
        configs = [device_config(row, id_prefix=args.id_prefix, **options) for row in rows]
        for cfg in configs:
            cfg.validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not configs:
        raise ConfigError("no devices to simulate")
    return configs


def device_tls(settings: Settings,
               cert_dir: Path | None) -> Callable[[str], ssl.SSLContext | None]:
    """thing -> TLS context: the shared settings' one, or with the device's own client
    certificate from ``cert_dir`` (built on first connect, then reused)."""
    if cert_dir is None:
        shared = settings.ssl_context()
        return lambda _thing: shared
    if not cert_dir.is_dir():
        raise ConfigError(f"--tls-cert-dir {cert_dir}: no such directory")
    cache: dict[str, ssl.SSLContext] = {}

    def for_thing(thing: str) -> ssl.SSLContext:
        ctx = cache.get(thing)
        if ctx is None:
            ctx = cache[thing] = tls_context(dataclasses.replace(
                settings.tls, cert_file=str(cert_dir / f"{thing}.crt"),
                key_file=str(cert_dir / f"{thing}.key")))
        return ctx

    return for_thing


def cmd_sim(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = parse_broker(args.sim_broker or settings.broker)
    try:
        profiles = parse_profiles(args.profile)
    except ProfileError as err:
        raise ConfigError(str(err)) from None
    configs = build_configs(args, settings)
    if args.tls_cert_dir is not None:
        for cfg in configs:  # fail now, not device by device at connect time
            for ext in ("crt", "key"):
                if not (args.tls_cert_dir / f"{cfg.thing}.{ext}").is_file():
                    raise ConfigError(f"--tls-cert-dir: {cfg.thing}.{ext} is missing in "
                                      f"{args.tls_cert_dir}")
    fleet = Fleet(configs, host, port, profiles=profiles, seed=args.seed,
                  connect_rate=args.connect_rate, tls=device_tls(settings, args.tls_cert_dir))
    return asyncio.run(_run(fleet))


async def _run(fleet: Fleet) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    counts = fleet.profile_counts()
    shown = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "no profiles"
    print(f"sim: {len(fleet)} devices -> {fleet.host}:{fleet.port} ({shown}); "
          "Ctrl-C to stop", flush=True)
    await fleet.start()
    last_pub = 0
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
            if stop.is_set():
                break
            published = fleet.stats["published"]
            rate = (published - last_pub) / STATUS_EVERY_S
            last_pub = published
            print(f"sim: {fleet.connected}/{len(fleet)} connected, {rate:.0f} msg/s out, "
                  f"{fleet.stats['received']} in, {fleet.stats['restarts']} restarts, "
                  f"{fleet.stats['downloads']} downloads", flush=True)
    finally:
        print("sim: powering off", flush=True)
        await fleet.stop()
    return 0
