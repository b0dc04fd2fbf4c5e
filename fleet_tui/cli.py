"""Command-line entry points (kubectl-style): ``fleet-tui [global flags] COMMAND ...``.

User mistakes print ``fleet-tui: error: ...`` on stderr and exit 2 (1 for runtime failures);
never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fleet_tui import __version__
from fleet_tui.config import ROLES, ConfigError, Settings, load_settings
from fleet_tui.domain.jobs import JobError
from fleet_tui.domain.query import QuerySyntaxError
from fleet_tui.domain.roles import RoleError
from fleet_tui.domain.rollout import RolloutError
from fleet_tui.registry.errors import RegistryError
from fleet_tui.service.client import ServiceError

EXIT_USAGE = 2


class CliError(Exception):
    pass


def bundled_sample_data() -> Path:
    """sample_data/ from a source checkout, or the copy packaged inside the wheel."""
    packaged = Path(__file__).with_name("_sample_data")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sample_data"


def _open_registry(settings: Settings) -> Any:
    from fleet_tui.registry.registry import Registry

    return Registry.open(settings.db)


# ---------------------------------------------------------------- commands


def cmd_overview(args: argparse.Namespace, settings: Settings) -> int:
    """No sub-command: open the console on the configured registry and broker (seeding an
    empty registry from the sample fleet first). ``fleet-tui groups tree`` prints the tree."""
    from fleet_tui.registry.importer import import_fleet
    from fleet_tui.tui.cli import cmd_console

    registry = _open_registry(settings)
    if registry.count_devices() == 0:
        report = import_fleet(registry, bundled_sample_data())
        print(f"seeded {settings.db} from the sample fleet: {report}")
    registry.close()
    return cmd_console(args, settings)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("import_fleet")
    from fleet_tui.registry.importer import import_fleet

    registry = _open_registry(settings)
    print(import_fleet(registry, Path(args.path)))
    return 0


def cmd_devices_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _open_registry(settings)
    if args.where:
        registry.parse_query(args.where)
    if args.count:
        print(registry.count_devices(group=args.group, where=args.where))
        return 0
    rows = registry.list_devices(
        group=args.group, where=args.where, offset=args.offset, limit=args.limit,
        order_by=args.sort, descending=args.desc,
    )
    cols = ["id", "hardware_rev", "firmware_version", "online", "health", "last_seen"]
    records = [{c: getattr(r, c) for c in cols} for r in rows]
    _emit(records, cols, args.format)
    return 0


def _emit(records: list[dict[str, Any]], cols: list[str], fmt: str) -> None:
    if fmt == "json":
        json.dump(records, sys.stdout, indent=2)
        print()
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        table = [[("-" if r[c] is None else str(r[c])) for c in cols] for r in records]
        widths = [max([len(c), *(len(row[i]) for row in table)]) for i, c in enumerate(cols)]
        print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
        for row in table:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print_tree(registry: Any) -> int:
    icons = {"static": "■", "dynamic": "◆", "folder": "▸"}

    def walk(node: Any, depth: int) -> None:
        count = registry.count_devices(group=node.name)
        detail = f"  [{node.query}]" if node.query else ""
        print(f"{'  ' * depth}{icons.get(node.kind, '?')} {node.name} ({count}){detail}")
        for child in sorted(node.children, key=lambda n: n.name):
            walk(child, depth + 1)

    print(f"fleet: {registry.count_devices()} devices")
    for root in registry.group_tree():
        walk(root, 0)
    return 0


def cmd_groups_tree(args: argparse.Namespace, settings: Settings) -> int:
    return _print_tree(_open_registry(settings))


def cmd_groups_create(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("edit_groups")
    registry = _open_registry(settings)
    if args.where:
        registry.parse_query(args.where)
    node = registry.create_group(
        args.name, query=args.where, parent=args.parent, members=args.members or (),
        description=args.description or "",
    )
    print(f"created {node.kind} group {node.name!r} "
          f"({registry.count_devices(group=node.name)} devices)")
    return 0


def cmd_groups_delete(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("edit_groups")
    _open_registry(settings).delete_group(args.name)
    print(f"deleted group {args.name!r}")
    return 0


def cmd_groups_move(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("edit_groups")
    _open_registry(settings).set_group_parent(args.name, args.parent)
    print(f"moved group {args.name!r} under {args.parent or '(root)'}")
    return 0


def cmd_releases_list(args: argparse.Namespace, settings: Settings) -> int:
    rels = _open_registry(settings).list_releases()
    cols = ["version", "hardware_revs", "desired_keys", "size", "sha256", "notes"]
    records = [
        {"version": r.version, "hardware_revs": ",".join(r.hardware_revs),
         "desired_keys": ",".join(r.desired_keys), "size": r.size, "sha256": r.sha256[:12],
         "notes": r.notes}
        for r in rels
    ]
    _emit(records, cols, args.format)
    return 0


def cmd_sample_generate(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.sample_fleet import write_fleet

    if args.devices < 1:
        raise CliError("--devices must be at least 1")
    write_fleet(Path(args.out), args.devices, args.seed, with_images=not args.no_images)
    print(f"wrote {args.devices} devices to {args.out}")
    return 0


# ----------------------------------------------------------------- parser

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet-tui",
        description="Terminal operations console for fleets of ESP32 devices.",
    )
    parser.add_argument("--version", action="version", version=f"fleet-tui {__version__}")
    parser.add_argument("--db", help="registry URL (sqlite:///path or postgresql://...)")
    parser.add_argument("--broker", help="MQTT broker HOST:PORT")
    parser.add_argument("--config", type=Path, help="config file (default: XDG config dir)")
    parser.add_argument("--role", choices=ROLES,
                        help="operator role: viewer (read-only), operator, approver")
    parser.set_defaults(handler=cmd_overview)
    _add_console_flags(parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("import", help="import a fleet directory or file (one transaction)")
    p.add_argument("path")
    p.set_defaults(handler=cmd_import)

    devices = sub.add_parser("devices", help="list and count devices").add_subparsers(
        metavar="ACTION", required=True)
    p = devices.add_parser("list", help="list devices of a group and/or matching a query")
    p.add_argument("--group", "-g")
    p.add_argument("--where", "-w", help='query, e.g. \'tag.region = "eu-west"\'')
    p.add_argument("--count", action="store_true", help="print only the number of devices")
    p.add_argument("--format", "-o", choices=("table", "json", "csv"), default="table")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--sort", default="id")
    p.add_argument("--desc", action="store_true")
    p.set_defaults(handler=cmd_devices_list)

    p = devices.add_parser("health", help="health of a group: counts, means, anomalies")
    p.add_argument("--group", "-g")
    p.add_argument("--where", "-w")
    p.add_argument("--format", "-o", choices=("table", "json"), default="table")
    p.set_defaults(handler=_lazy("fleet_tui.service.cli", "cmd_devices_health"))

    groups = sub.add_parser("groups", help="the group tree").add_subparsers(
        metavar="ACTION", required=True)
    p = groups.add_parser("tree", help="print the group tree with member counts")
    p.set_defaults(handler=cmd_groups_tree)
    p = groups.add_parser("create", help="create a static, dynamic or folder group")
    p.add_argument("name")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--where", "-w", help="query of a dynamic group")
    kind.add_argument("--members", nargs="+", metavar="DEVICE", help="members of a static group")
    p.add_argument("--parent", "-p", help="parent group (hierarchy)")
    p.add_argument("--description", "-d")
    p.set_defaults(handler=cmd_groups_create)
    p = groups.add_parser("delete", help="delete a group (it must have no subgroups)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_groups_delete)
    p = groups.add_parser("move", help="move a group under another (or to the root)")
    p.add_argument("name")
    p.add_argument("--parent", "-p", help="new parent; omit for the root")
    p.set_defaults(handler=cmd_groups_move)

    releases = sub.add_parser("releases", help="firmware releases").add_subparsers(
        metavar="ACTION", required=True)
    p = releases.add_parser("list", help="list the release manifest")
    p.add_argument("--format", "-o", choices=("table", "json", "csv"), default="table")
    p.set_defaults(handler=cmd_releases_list)

    sample = sub.add_parser("sample", help="sample fleets").add_subparsers(
        metavar="ACTION", required=True)
    p = sample.add_parser("generate", help="write a generated fleet of any size")
    p.add_argument("--devices", "-n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="fleet-sample")
    p.add_argument("--no-images", action="store_true", help="skip firmware image files")
    p.set_defaults(handler=cmd_sample_generate)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


def _lazy(module: str, name: str) -> Handler:
    """A handler imported on use, so `fleet-tui --help` stays fast."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        func: Handler = getattr(importlib.import_module(module), name)
        return func(args, settings)

    return handler


def _register_service(sub: Any) -> None:
    from fleet_tui.service.cli import register

    register(sub)


def _register_console(sub: Any) -> None:
    from fleet_tui.tui.cli import register

    register(sub)


def _register_jobs(sub: Any) -> None:
    from fleet_tui.service.jobs_cli import register

    register(sub)


def _add_console_flags(parser: argparse.ArgumentParser) -> None:
    from fleet_tui.tui.cli import add_console_flags

    add_console_flags(parser)


def _register_demo(sub: Any) -> None:
    from fleet_tui.demo import register

    register(sub)


def _register_sim(sub: Any) -> None:
    from fleet_tui.sim.cli import register

    register(sub)


def _register_automation(sub: Any) -> None:
    from fleet_tui.api.cli import register as register_api
    from fleet_tui.service.automation_cli import register

    register_api(sub)
    register(sub)


#: Other modules (service, sim, console) add their sub-commands here.
EXTRA_COMMANDS: list[Callable[[Any], None]] = [_register_service, _register_jobs, _register_sim,
                                               _register_console, _register_demo,
                                               _register_automation]


def _format_error(err: Exception) -> str:
    if isinstance(err, QuerySyntaxError) and err.query:
        pad = " " * (len("fleet-tui: error: query: ") + err.col - 1)
        return f"fleet-tui: error: query: {err.query}\n{pad}^ {err}"
    return f"fleet-tui: error: {err}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, {"db": args.db, "broker": args.broker,
                                                 "role": args.role})
        handler: Handler = args.handler
        return handler(args, settings)
    except (CliError, ConfigError, QuerySyntaxError, RegistryError, ServiceError, JobError,
            RolloutError, RoleError) as err:
        print(_format_error(err), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
