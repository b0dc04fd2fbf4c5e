"""`fleet-tui console` (and `fleet-tui` with no sub-command): the console on the configured
registry and broker. The fleet service runs in the same process unless `--attach` points at
a running `fleet-tui serve` (through its broker). Textual is imported only when it runs."""

from __future__ import annotations

import argparse
from typing import Any

from fleet_tui.config import Settings


def add_console_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--read-only", action="store_true", help="hide every mutating action")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-service", action="store_true",
                      help="do not run the fleet service in this process (registry only)")
    mode.add_argument("--attach", nargs="?", const="", metavar="HOST:PORT",
                      help="use a running `fleet-tui serve` through its broker (default: the "
                           "configured broker) instead of running the service here")
    p.add_argument("--headless", action="store_true", help="run without a terminal (tests)")
    p.add_argument("--exit-after", type=float, metavar="S", help="quit after S seconds")


def register(sub: Any) -> None:
    p = sub.add_parser("console", help="open the terminal console on the configured registry")
    add_console_flags(p)
    p.set_defaults(handler=cmd_console)


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.config import parse_broker
    from fleet_tui.registry.registry import Registry
    from fleet_tui.tui.app import FleetApp
    from fleet_tui.tui.live import RunnableService

    if getattr(args, "read_only", False):
        settings.read_only = True
    attach = getattr(args, "attach", None)
    if attach:
        parse_broker(attach)
        settings.broker = attach
    registry = Registry.open(settings.db)
    service: RunnableService | None = None
    if attach is not None:
        from fleet_tui.service.remote import RemoteService

        service = RemoteService(settings)
    elif not getattr(args, "no_service", False):
        from fleet_tui.service.fleet_service import FleetService

        service = FleetService(settings, registry)
    try:
        app = FleetApp(settings, registry, service, pace_gc=True)
        app.exit_after = getattr(args, "exit_after", None)
        app.run(headless=getattr(args, "headless", False))
    finally:
        registry.close()
    return 0
