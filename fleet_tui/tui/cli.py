"""`fleet-tui console`: the console on the configured registry (and, unless told otherwise,
the fleet service in the same process). Textual is imported only when the command runs."""

from __future__ import annotations

import argparse
from typing import Any

from fleet_tui.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("console", help="open the terminal console on the configured registry")
    p.add_argument("--read-only", action="store_true", help="hide every mutating action")
    p.add_argument("--no-service", action="store_true",
                   help="do not run the fleet service in this process (registry only)")
    p.set_defaults(handler=cmd_console)


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.registry.registry import Registry
    from fleet_tui.tui.app import FleetApp

    if args.read_only:
        settings.read_only = True
    registry = Registry.open(settings.db)
    service = None
    if not args.no_service:
        from fleet_tui.service.fleet_service import FleetService

        service = FleetService(settings, registry)
    try:
        FleetApp(settings, registry, service).run()
    finally:
        registry.close()
    return 0
