"""Service sub-commands: ``serve``, ``shadow get|set``, ``devices health``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from fleet_tui.config import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.gc_pacing import pace_gc
    from fleet_tui.registry.registry import Registry
    from fleet_tui.service.fleet_service import FleetService, service_client_id

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    registry = Registry.open(settings.db)
    service = FleetService(settings, registry, client_id=service_client_id(settings))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger("fleet_tui").info(
            "serving shadows on %s (prefix %s), registry %s", settings.broker,
            settings.shadow_prefix, settings.db)
        pacing = asyncio.create_task(pace_gc(stop))  # p99 latency: no long full collections
        await service.run(stop)
        stop.set()
        await pacing

    asyncio.run(main())
    logging.getLogger("fleet_tui").info("stopped cleanly: %s", service.stats())
    return 0


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    print()


def cmd_shadow_get(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.client import ShadowClient

    _print_json(asyncio.run(ShadowClient(settings, args.timeout).get(args.thing, args.name)))
    return 0


def cmd_shadow_set(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.cli import CliError
    from fleet_tui.service.client import ShadowClient, parse_assignments

    settings.require("edit_desired")
    try:
        desired = parse_assignments(args.assignments)
    except ValueError as err:
        raise CliError(str(err)) from None
    result = asyncio.run(ShadowClient(settings, args.timeout).update_desired(
        args.thing, desired, args.name, args.version))
    _print_json(result)
    return 0


def cmd_devices_health(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.registry.registry import Registry
    from fleet_tui.service.health_report import group_health_report

    report = group_health_report(Registry.open(settings.db), group=args.group, where=args.where)
    if args.format == "json":
        _print_json(report)
        return 0
    s = report["summary"]
    print(f"devices {s['total']}  online {s['online']}  offline {s['offline']}  "
          f"healthy {s['healthy']}  degraded {s['degraded']}  unhealthy {s['unhealthy']}  "
          f"unknown {s['unknown']}")
    means = ", ".join(f"{k} {v:.1f}" for k, v in s["means"].items() if v is not None)
    if means:
        print(f"means: {means}")
    for a in report["anomalies"]:
        print(f"anomaly  {a['device_id']:<16} {a['metric']:<10} {a['value']:>10.1f}  "
              f"score {a['score']:.1f} ({a['method']})")
    for d in report["unhealthy"]:
        print(f"{d['health']:<9} {d['device_id']:<16} {'; '.join(d['reasons'])}")
    return 0


def cmd_broker_acl(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.cli import CliError
    from fleet_tui.service.broker_acl import AclError, dynsec_commands, mosquitto_acl
    from fleet_tui.service.topics import Topics

    topics = Topics(settings.shadow_prefix, settings.fleet_prefix)
    devices = None
    if args.devices_from_registry:
        from fleet_tui.registry.registry import Registry

        devices = Registry.open(settings.db).device_ids()
    try:
        if args.format == "dynsec":
            text = json.dumps(dynsec_commands(topics, service_user=args.service_user,
                                              app_users=args.app_user or (), devices=devices),
                              indent=2) + "\n"
        else:
            text = mosquitto_acl(topics, service_user=args.service_user,
                                 app_users=args.app_user or (), devices=devices)
    except AclError as err:
        raise CliError(str(err)) from None
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"wrote {args.format} ACL to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    from fleet_tui.service.broker_acl import SERVICE_USER

    broker = sub.add_parser("broker", help="broker security: generate the ACL").add_subparsers(
        metavar="ACTION", required=True)
    p = broker.add_parser(
        "acl", help="per-device ACL: devices reach only their own topics",
        description="Generate the broker ACL from the topic prefixes in the settings. Devices "
                    "must connect with user name == client id == thing name.")
    p.add_argument("--format", choices=("mosquitto", "dynsec"), default="mosquitto",
                   help="mosquitto acl_file, or dynamic-security control commands (JSON)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--pattern", action="store_true",
                       help="one %%u pattern block for every device (default; any fleet size)")
    scope.add_argument("--devices-from-registry", action="store_true",
                       help="an explicit block (or dynsec client) per registry device")
    p.add_argument("--service-user", default=SERVICE_USER, help=f"(default {SERVICE_USER})")
    p.add_argument("--app-user", action="append", metavar="USER",
                   help="console/CLI account: shadow requests and read-only streams")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(handler=cmd_broker_acl)

    p = sub.add_parser("serve", help="run the fleet service (shadows, presence, telemetry)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=cmd_serve)

    shadow = sub.add_parser("shadow", help="read and write device shadows via the service")
    actions = shadow.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("get", help="print a shadow document")
    p.add_argument("thing")
    p.add_argument("--name", "-n", default="", help="named shadow (default: classic)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(handler=cmd_shadow_get)
    p = actions.add_parser("set", help="write desired state: key=value ... (JSON values)")
    p.add_argument("thing")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--name", "-n", default="")
    p.add_argument("--version", type=int, help="only if the shadow is at this version (409)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(handler=cmd_shadow_set)
