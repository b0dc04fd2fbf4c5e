"""CLI for schedules, maintenance windows, policies and alerts: ``fleet-tui schedule ...``,
``fleet-tui window ...``, ``fleet-tui policy ...``, ``fleet-tui alerts ...``. The same
service functions as the console and the API; the running ``fleet-tui serve`` acts."""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fleet_tui.config import Settings
from fleet_tui.domain import roles
from fleet_tui.service.jobs_cli import _ago, _format, _print_json, _registry

Handler = Callable[[argparse.Namespace, Settings], int]


def _friendly(func: Handler) -> Handler:
    """Schedule, window and policy errors become the CLI's usage errors."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace, settings: Settings) -> int:
        from fleet_tui.cli import CliError
        from fleet_tui.domain.policy import PolicyError
        from fleet_tui.domain.schedule import ScheduleError

        try:
            return func(args, settings)
        except (PolicyError, ScheduleError) as err:
            raise CliError(str(err)) from None

    return wrapper


def _mutating(settings: Settings, permission: str) -> Any:
    """The acting operator, refused early (exit 2) when the role may not; the service
    layer checks again (with what the action itself needs)."""
    from fleet_tui.service.job_control import Actor

    settings.require(permission)
    fields = settings.audit_fields()
    return Actor(fields["actor"], fields["role"])


def _parse_at(text: str | None, tz: str) -> float | None:
    from fleet_tui.cli import CliError
    from fleet_tui.domain.schedule import zone

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at {text!r}: expected ISO time, e.g. 2026-12-24T02:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz))
    return moment.timestamp()


# ------------------------------------------------------------------ schedules

@_friendly
def cmd_schedule_create(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.scheduler import create_schedule

    if args.kind == "job":
        params = json.loads(args.params) if args.params else {}
        target: dict[str, Any] = {}
        if args.group:
            target["group"] = args.group
        if args.where:
            target["where"] = args.where
        spec: dict[str, Any] = {"type": args.type, "params": params, "target": target,
                                "settings": json.loads(args.settings or "{}")}
    else:
        spec = {"release": args.release, "group": args.group, "waves": args.waves,
                "confirm": args.confirm}
    registry = _registry(settings)
    try:
        row = create_schedule(registry, args.kind, spec, _mutating(
            settings, roles.START_ROLLOUT if args.kind == "rollout" else roles.CREATE_JOB),
                              at=_parse_at(args.at, args.tz), cron=args.cron, tz=args.tz,
                              schedule_id=args.id)
    finally:
        registry.close()
    print(f"schedule {row.id}: next run {_ago(row.next_run)}")
    return 0


def cmd_schedule_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    try:
        rows = registry.automation.list_schedules()
    finally:
        registry.close()
    if args.format == "json":
        _print_json([r.to_dict() for r in rows])
        return 0
    for r in rows:
        when = (r.cron and f"cron '{r.cron}' {r.timezone}") or f"at {_ago(r.at)}"
        state = "on" if r.enabled else "done"
        result = (r.last_result or {}).get("error") or (r.last_result or {}).get("job") or \
            (r.last_result or {}).get("rollout") or "-"
        print(f"{r.id:32} {r.kind:7} {state:4} {when:34} next {_ago(r.next_run):19} "
              f"last {result}")
    return 0


def cmd_schedule_delete(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.scheduler import delete_schedule

    registry = _registry(settings)
    try:
        delete_schedule(registry, args.id, _mutating(settings, roles.CREATE_JOB))
    finally:
        registry.close()
    print(f"schedule {args.id} deleted")
    return 0


# ------------------------------------------------------------------ windows

@_friendly
def cmd_window_set(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.scheduler import set_window

    registry = _registry(settings)
    try:
        w = set_window(registry, args.group, args.window, _mutating(settings, roles.EDIT_GROUPS))
    finally:
        registry.close()
    print(f"group {args.group}: maintenance window {w.text} "
          f"({'open' if w.is_open(time.time()) else 'closed'} now)")
    return 0


def cmd_window_list(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.scheduler import window_status

    registry = _registry(settings)
    try:
        rows = window_status(registry)
    finally:
        registry.close()
    if args.format == "json":
        _print_json(rows)
        return 0
    for r in rows:
        state = "open" if r["open"] else f"closed, opens {_ago(r['next_open'])}"
        print(f"{r['group']:24} {r['window']:40} {state}")
    return 0


def cmd_window_delete(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.scheduler import delete_window

    registry = _registry(settings)
    try:
        delete_window(registry, args.group, _mutating(settings, roles.EDIT_GROUPS))
    finally:
        registry.close()
    print(f"group {args.group}: maintenance window removed")
    return 0


# ------------------------------------------------------------------ policies

@_friendly
def cmd_policy_load(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.policies import load_policy_file

    registry = _registry(settings)
    try:
        names = load_policy_file(registry, args.file, _mutating(settings, roles.CREATE_JOB))
    finally:
        registry.close()
    print(f"loaded {len(names)} policies: {', '.join(names)}")
    return 0


def cmd_policy_list(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.policies import list_policies

    registry = _registry(settings)
    try:
        rows = list_policies(registry)
    finally:
        registry.close()
    if args.format == "json":
        _print_json([r.to_dict() for r in rows])
        return 0
    now = time.time()
    for r in rows:
        d = r.definition
        state = ("on" if r.enabled else "off") + (" (dry-run)" if r.dry_run else "")
        fired = sum(1 for t in r.fired_at if now - t < 3600)
        print(f"{r.name:28} {state:14} when {d['when']!r} then {d['then']} "
              f"[{fired}/{d['max_per_hour']} this hour]")
    return 0


@_friendly
def cmd_policy_set(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.policies import set_policy

    values = {"enable": {"enabled": True}, "disable": {"enabled": False},
              "dry-run": {"dry_run": True}, "live": {"dry_run": False}}[args.action]
    registry = _registry(settings)
    try:
        row = set_policy(registry, args.name, _mutating(settings, roles.CREATE_JOB), **values)
    finally:
        registry.close()
    print(f"policy {row.name}: {'enabled' if row.enabled else 'disabled'}"
          + (", dry-run" if row.dry_run else ""))
    return 0


# ------------------------------------------------------------------ alerts

def cmd_alerts_list(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.alerts import list_alerts

    registry = _registry(settings)
    try:
        rows = list_alerts(registry, status=None if args.all else "open", group=args.group,
                           kind=args.kind, limit=args.limit)
    finally:
        registry.close()
    if args.format == "json":
        _print_json([r.to_dict() for r in rows])
        return 0
    for a in rows:
        print(f"#{a.id:<5} {a.severity:8} {a.status:8} {a.kind:15} {a.group_name or '-':16} "
              f"x{a.count:<4} {_ago(a.last_seen)}  {a.message}")
    return 0


def cmd_alerts_counts(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.alerts import open_alert_summary, recent_alert_counts

    registry = _registry(settings)
    try:
        counts = recent_alert_counts(registry, window_s=settings.automation.recent_alerts_s)
        summary = open_alert_summary(registry)
    finally:
        registry.close()
    if args.format == "json":
        _print_json({"recent_alerts": counts, "open_by_severity": summary})
        return 0
    print("open: " + ", ".join(f"{n} {s}" for s, n in summary.items()))
    for group, n in sorted(counts.items()):
        print(f"{group:24} {n} recent alerts")
    return 0


def cmd_alerts_resolve(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.alerts import resolve_alert

    registry = _registry(settings)
    try:
        a = resolve_alert(registry, args.id, _mutating(settings, roles.EDIT_GROUPS))
    finally:
        registry.close()
    print(f"alert #{a.id} resolved")
    return 0


def register(sub: Any) -> None:
    schedule = sub.add_parser("schedule", help="scheduled and recurring jobs and rollouts")
    actions = schedule.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("create", help="a job or rollout at a time or on a cron expression")
    p.add_argument("kind", choices=("job", "rollout"))
    p.add_argument("--at", help="ISO time (in --tz unless it has an offset)")
    p.add_argument("--cron", help="e.g. '0 2 * * *' (nightly at 02:00 in --tz)")
    p.add_argument("--tz", default="UTC", help="IANA zone, e.g. Europe/Berlin")
    p.add_argument("--type", default="diagnostic", help="job type (kind job)")
    p.add_argument("--params", help="job params as JSON")
    p.add_argument("--settings", help="job settings as JSON")
    p.add_argument("--group")
    p.add_argument("--where")
    p.add_argument("--release", help="release version (kind rollout)")
    p.add_argument("--waves", default="1,10,50,100")
    p.add_argument("--confirm", metavar="VERSION", help="kind rollout: the release version, "
                   "typed out")
    p.add_argument("--id")
    p.set_defaults(handler=cmd_schedule_create)
    p = actions.add_parser("list", help="schedules, their next and last runs")
    _format(p)
    p.set_defaults(handler=cmd_schedule_list)
    p = actions.add_parser("delete", help="remove a schedule")
    p.add_argument("id")
    p.set_defaults(handler=cmd_schedule_delete)

    window = sub.add_parser("window", help="per-group maintenance windows")
    actions = window.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("set", help="e.g. set plant 'Mon-Fri 01:00-04:00 Europe/Berlin'")
    p.add_argument("group")
    p.add_argument("window")
    p.set_defaults(handler=cmd_window_set)
    p = actions.add_parser("list", help="windows and whether they are open now")
    _format(p)
    p.set_defaults(handler=cmd_window_list)
    p = actions.add_parser("delete", help="remove a group's window")
    p.add_argument("group")
    p.set_defaults(handler=cmd_window_delete)

    policy = sub.add_parser("policy", help="when-then policies")
    actions = policy.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("load", help="load or reload a policies TOML file")
    p.add_argument("file")
    p.set_defaults(handler=cmd_policy_load)
    p = actions.add_parser("list", help="policies, their state and firings this hour")
    _format(p)
    p.set_defaults(handler=cmd_policy_list)
    for action, helptext in (("enable", "turn a policy on"), ("disable", "turn it off"),
                             ("dry-run", "audit what it would do, do nothing"),
                             ("live", "leave dry-run")):
        p = actions.add_parser(action, help=helptext)
        p.add_argument("name")
        p.set_defaults(handler=cmd_policy_set, action=action)

    alerts = sub.add_parser("alerts", help="alerts raised by health rules and policies")
    actions = alerts.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("list", help="open alerts (--all: resolved too)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--group")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=50)
    _format(p)
    p.set_defaults(handler=cmd_alerts_list)
    p = actions.add_parser("counts", help="recent alerts per group, open by severity")
    _format(p)
    p.set_defaults(handler=cmd_alerts_counts)
    p = actions.add_parser("resolve", help="resolve an alert by hand")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_alerts_resolve)
