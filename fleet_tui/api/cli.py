"""``fleet-tui api --listen HOST:PORT``: serve the Fleet HTTP API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from fleet_tui.config import Settings


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from fleet_tui.api.app import create_app
    from fleet_tui.api.auth import TokenTable
    from fleet_tui.cli import CliError
    from fleet_tui.registry.registry import Registry

    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"--listen {args.listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    entries = dict(settings.automation.api_tokens)
    for text in args.token or []:
        token, eq, who = text.partition("=")
        if not eq:
            raise CliError(f"--token {text!r}: expected TOKEN=OPERATOR:ROLE")
        entries[token] = who
    tokens = TokenTable.parse(entries)
    if not tokens.tokens:
        raise CliError("no API tokens: add [automation.api_tokens] to the config file or "
                       "pass --token TOKEN=OPERATOR:ROLE")
    registry = Registry.open(settings.db)
    try:
        uvicorn.run(create_app(registry, settings, tokens), host=host or "127.0.0.1",
                    port=int(port), log_level=args.log_level)
    finally:
        registry.close()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the Fleet HTTP API (FastAPI + uvicorn)")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    p.add_argument("--token", action="append", metavar="TOKEN=OPERATOR:ROLE",
                   help="a bearer token (repeatable; also [automation.api_tokens])")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(handler=cmd_api)
