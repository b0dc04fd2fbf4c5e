"""CLI for jobs, rollouts and the audit log: ``fleet-tui jobs ...``, ``fleet-tui rollout
...``, ``fleet-tui audit ...``. They call the same service functions as the console; the
running ``fleet-tui serve`` carries the work out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from fleet_tui.config import Settings


def _registry(settings: Settings) -> Any:
    from fleet_tui.registry.registry import Registry

    return Registry.open(settings.db)


ACTIONS = {"jobs.create": "create_job", "jobs.cancel": "cancel_job",
           "rollout.start": "start_rollout", "rollout.approve": "approve_rollout",
           "rollout.halt": "halt_rollout", "rollout.resume": "resume_rollout",
           "rollout.cancel": "cancel_rollout", "rollout.rollback": "rollback_rollout"}


def _actor(settings: Settings, action: str) -> Any:
    """The acting operator, refused early (exit 2) when the role may not ``action``; the
    service layer checks again, for every caller."""
    from fleet_tui.service.job_control import Actor

    settings.require(ACTIONS[action])
    fields = settings.audit_fields()
    return Actor(fields["actor"], fields["role"])


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    print()


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# ------------------------------------------------------------------------ jobs

def _job_settings(args: argparse.Namespace) -> Any:
    from fleet_tui.cli import CliError
    from fleet_tui.domain.jobs import AbortCriterion, JobError, JobSettings, RampUp

    abort = []
    for text in args.abort or []:
        parts = text.split(":")
        if len(parts) != 3:
            raise CliError(f"--abort {text!r}: expected TYPE:PERCENT:MIN, e.g. FAILED:10:20")
        try:
            abort.append(AbortCriterion(parts[0].upper(), float(parts[1]), int(parts[2])))
        except ValueError:
            raise CliError(f"--abort {text!r}: PERCENT and MIN must be numbers") from None
    ramp = None
    if args.ramp:
        parts = args.ramp.split(",")
        try:
            ramp = RampUp(int(parts[0]), float(parts[1]), int(parts[2]),
                          parts[3] if len(parts) > 3 else "notified")
        except (IndexError, ValueError):
            raise CliError(f"--ramp {args.ramp!r}: expected BASE,FACTOR,EVERY[,notified|"
                           "succeeded]") from None
    try:
        return JobSettings(
            concurrency=args.concurrency, rate_per_minute=args.rate, ramp_up=ramp,
            timeout_s=args.timeout if args.timeout and args.timeout > 0 else None,
            retries=args.retries,
            retry_on=tuple(s.strip().upper() for s in args.retry_on.split(",")),
            abort=tuple(abort), soak_s=args.soak)
    except JobError as err:
        raise CliError(str(err)) from None


def _target(args: argparse.Namespace) -> Any:
    from fleet_tui.service.job_control import Target

    ids = tuple(args.devices) if args.devices else None
    return Target(group=args.target, where=args.where, device_ids=ids)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    from fleet_tui.cli import CliError
    from fleet_tui.service.client import parse_assignments

    params: dict[str, Any] = {}
    if args.command:
        params["command"] = args.command
    if args.release:
        params["release"] = args.release
    if args.config_values:
        try:
            params["config"] = parse_assignments(args.config_values)
        except ValueError as err:
            raise CliError(f"--set: {err}") from None
    return params


def cmd_jobs_create(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.job_control import create_job, plan_job

    registry = _registry(settings)
    actor = None if args.dry_run else _actor(settings, "jobs.create")
    plan = plan_job(registry, args.type, _params(args), _target(args), _job_settings(args),
                    job_id=args.id)
    summary = plan.summary()
    if args.format == "json":
        _print_json({**summary, "dry_run": args.dry_run,
                     "skipped_devices": [{"device_id": d, "reason": r}
                                         for d, r in plan.skipped]})
    else:
        print(f"job {plan.job_id}: {plan.job_type} {json.dumps(plan.document)}")
        print(f"  targets: {summary['queued']} devices, {summary['skipped']} skipped")
        for reason, n in sorted(summary["skip_reasons"].items(), key=lambda kv: -kv[1]):
            print(f"  skipped {n:>6}  {reason}")
        est = plan.estimated_s()
        if est is not None:
            print(f"  estimated release time at {plan.settings.rate_per_minute}/min: "
                  f"{est:.0f} s")
    if args.dry_run:
        print("dry run: nothing was created" if args.format != "json" else "", end="")
        if args.format != "json":
            print()
        return 0
    assert actor is not None
    create_job(registry, plan, actor)
    if args.format != "json":
        print(f"created {plan.job_id}; the running `fleet-tui serve` starts it")
    return 0


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.domain.jobs import Progress

    registry = _registry(settings)
    jobs = registry.jobs.list_jobs(status=args.status, limit=args.limit)
    counts = registry.jobs.counts([j.id for j in jobs])
    if args.format == "json":
        _print_json([{"id": j.id, "type": j.job_type, "status": j.status, "reason": j.reason,
                      "created_by": j.created_by, "created_at": j.created_at,
                      "counts": counts[j.id]} for j in jobs])
        return 0
    for j in jobs:
        progress = Progress(counts[j.id])
        print(f"{j.id:<44} {j.job_type:<16} {j.status:<12} {progress.finished}/"
              f"{progress.total}  {progress.line()}")
    if not jobs:
        print("no jobs")
    return 0


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.domain.jobs import ordered_counts

    registry = _registry(settings)
    job = registry.jobs.get(args.id)
    counts = ordered_counts(registry.jobs.counts([job.id])[job.id])
    executions = registry.jobs.executions(job.id, limit=args.limit)
    if args.format == "json":
        _print_json({"id": job.id, "type": job.job_type, "document": job.document,
                     "target": job.target, "settings": job.settings, "status": job.status,
                     "reason": job.reason, "rollout": job.rollout_id,
                     "created_by": job.created_by, "counts": counts,
                     "executions": [{"device_id": e.device_id, "status": e.status,
                                     "attempt": e.attempt, "details": e.status_details,
                                     "skip_reason": e.skip_reason} for e in executions]})
        return 0
    print(f"job {job.id}  {job.job_type}  {job.status}" + (f"  ({job.reason})"
                                                           if job.reason else ""))
    print(f"  document: {json.dumps(job.document)}  target: {json.dumps(job.target)}")
    print(f"  created by {job.created_by} at {_ago(job.created_at)}")
    print("  " + "  ".join(f"{s.lower()} {n}" for s, n in counts.items()))
    for e in executions:
        note = e.skip_reason or (json.dumps(e.status_details) if e.status_details else "")
        print(f"  {e.device_id:<20} {e.status:<12} attempt {e.attempt + 1}  {note}")
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.job_control import cancel_job

    registry = _registry(settings)
    result = cancel_job(registry, args.id, _actor(settings, "jobs.cancel"), force=args.force,
                        reason=args.reason)
    print(result.explain())
    return 0


# --------------------------------------------------------------------- rollouts

def _rollout_plan(args: argparse.Namespace, settings: Settings, registry: Any) -> Any:
    from fleet_tui.cli import CliError
    from fleet_tui.domain.jobs import JobError, JobSettings
    from fleet_tui.domain.rollout import Gates, RolloutError, WaveSpec
    from fleet_tui.service.rollouts import plan_rollout

    try:
        gates = Gates(error_threshold=args.error_threshold,
                      success_threshold=args.success_threshold, soak_s=args.soak,
                      max_offline_delta=args.max_offline_delta,
                      auto_advance=args.auto_advance, two_person=args.two_person)
        job_settings = JobSettings(concurrency=args.concurrency, rate_per_minute=args.rate,
                                   timeout_s=args.timeout, soak_s=args.soak)
        spec = WaveSpec.parse(args.waves)
    except (RolloutError, JobError) as err:
        raise CliError(str(err)) from None
    return plan_rollout(registry, args.release, args.group, spec=spec, gates=gates,
                        job_settings=job_settings)


def _print_plan(plan: Any) -> None:
    d = plan.to_dict()
    print(f"flight plan {plan.rollout_id}: release {plan.release} to group {plan.group} "
          f"(previous {d['previous_version'] or '-'})")
    for w in d["waves"]:
        hw = ", ".join(f"{k} {v}" for k, v in w["by_hardware"].items())
        print(f"  wave {w['index'] + 1} {w['name']:<10} {w['devices']:>6} devices   {hw}"
              f"   {len(w['by_site'])} sites")
    reasons: dict[str, int] = {}
    for s in d["skipped"]:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:>6}  {reason}")
    if d["estimated_s"] is not None:
        print(f"  estimated duration: {d['estimated_s'] / 60:.1f} min (release rate plus "
              "soak per wave, approvals not counted)")
    g = plan.gates
    print(f"  gates: error >= {g.error_threshold:.0%} halts, success >= "
          f"{g.success_threshold:.0%} passes, soak {g.soak_s:g} s, offline delta <= "
          f"{g.max_offline_delta:.0%}" + (", auto-advance" if g.auto_advance else
                                          ", approval between waves")
          + (", two-person rule on the final wave" if g.two_person else ""))


def cmd_rollout_plan(args: argparse.Namespace, settings: Settings) -> int:
    plan = _rollout_plan(args, settings, _registry(settings))
    if args.format == "json":
        _print_json(plan.to_dict())
    else:
        _print_plan(plan)
        print("dry run: nothing was started")
    return 0


def cmd_rollout_start(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.cli import CliError
    from fleet_tui.service.rollouts import start_rollout

    registry = _registry(settings)
    actor = _actor(settings, "rollout.start")
    plan = _rollout_plan(args, settings, registry)
    _print_plan(plan)
    confirm = args.confirm
    if confirm is None:
        if not sys.stdin.isatty():
            raise CliError(f"starting a rollout needs --confirm {plan.release} (the release "
                           "version typed out)")
        confirm = input(f"type the release version ({plan.release}) to start: ").strip()
    rollout = start_rollout(registry, plan, actor, confirm=confirm)
    print(f"started {rollout.id}: wave {rollout.waves[0].name} is running")
    return 0


def _print_status(registry: Any, rollout: Any) -> None:
    from fleet_tui.service.rollouts import wave_status_counts

    print(f"rollout {rollout.id}  release {rollout.release_version} -> group "
          f"{rollout.group_name}  {rollout.status}")
    if rollout.reason:
        print(f"  {rollout.reason}")
    for w in wave_status_counts(registry, rollout):
        marker = ">" if w["index"] == rollout.current_wave else " "
        counts = "  ".join(f"{k.lower()} {v}" for k, v in sorted(w["counts"].items()) if v)
        approvals = f"  approved by {', '.join(w['approvals'])}" if w["approvals"] else ""
        print(f" {marker} wave {w['index'] + 1} {w['name']:<10} {w['status']:<8} "
              f"{w['devices']:>6} devices  {counts}{approvals}")


def cmd_rollout_status(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.rollouts import wave_status_counts

    registry = _registry(settings)
    rollout = registry.rollouts.get(args.id)
    if args.format == "json":
        _print_json({"id": rollout.id, "release": rollout.release_version,
                     "group": rollout.group_name, "status": rollout.status,
                     "reason": rollout.reason, "current_wave": rollout.current_wave,
                     "waves": wave_status_counts(registry, rollout)})
    else:
        _print_status(registry, rollout)
    return 0


def cmd_rollout_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    rollouts = registry.rollouts.list_rollouts(active_only=args.active, limit=args.limit)
    for r in rollouts:
        wave = r.wave.name if r.wave else "-"
        print(f"{r.id:<48} {r.release_version:<8} {r.group_name:<16} {r.status:<16} "
              f"wave {wave}")
    if not rollouts:
        print("no rollouts")
    return 0


def cmd_rollout_action(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_tui.service.rollouts import act

    registry = _registry(settings)
    rollout = act(registry, args.id, args.action, _actor(settings, f"rollout.{args.action}"),
                  reason=args.reason)
    _print_status(registry, rollout)
    return 0


# ------------------------------------------------------------------------ audit

def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    entries = registry.audit.entries(action=args.action, actor=args.actor, target=args.target,
                                     limit=args.limit, newest_first=True)
    if args.format == "json":
        _print_json([dataclasses.asdict(e) for e in entries])
        return 0
    for e in reversed(entries):
        print(f"{e.id:>6} {_ago(e.ts)} {e.actor:<12} {e.role:<9} {e.action:<22} {e.target}  "
              f"{json.dumps(e.details, default=str)[:120]}")
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    report = _registry(settings).audit.verify()
    print(report)
    return 0 if report.ok else 1


# ---------------------------------------------------------------- registration

def _format(p: Any) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")


def register(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="bulk jobs: create, list, show, cancel")
    actions = jobs.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("create", help="create a job over a group, a query or devices")
    p.add_argument("--type", required=True,
                   choices=("config_update", "firmware_update", "command", "reboot",
                            "diagnostic"))
    p.add_argument("--target", "--group", dest="target", metavar="GROUP")
    p.add_argument("--where", metavar="QUERY")
    p.add_argument("--devices", nargs="+", metavar="ID")
    p.add_argument("--command", choices=("led_on", "led_off", "fail"))
    p.add_argument("--set", dest="config_values", nargs="+", metavar="KEY=VALUE",
                   help="config_update: the keys to set (JSON values)")
    p.add_argument("--release", help="firmware_update: the release version")
    p.add_argument("--id", help="job id (default: generated)")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--rate", type=int, help="max started per minute (default: no limit)")
    p.add_argument("--ramp", help="exponential ramp-up BASE,FACTOR,EVERY[,notified|succeeded]")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds IN_PROGRESS before TIMED_OUT (0: none)")
    p.add_argument("--retries", type=int, default=0, help="0-10")
    p.add_argument("--retry-on", default="FAILED,TIMED_OUT")
    p.add_argument("--abort", action="append", metavar="TYPE:PERCENT:MIN",
                   help="abort when TYPE (FAILED|TIMED_OUT|REJECTED|ALL) exceeds PERCENT%% "
                        "after MIN finished; repeatable")
    p.add_argument("--soak", type=float, default=0.0,
                   help="firmware: seconds online and healthy on the new version")
    p.add_argument("--dry-run", action="store_true", help="show targets and skips only")
    _format(p)
    p.set_defaults(handler=cmd_jobs_create)
    p = actions.add_parser("list", help="list jobs with progress")
    p.add_argument("--status", nargs="+")
    p.add_argument("--limit", type=int, default=50)
    _format(p)
    p.set_defaults(handler=cmd_jobs_list)
    p = actions.add_parser("show", help="a job, its counts and executions")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=50, help="executions shown")
    _format(p)
    p.set_defaults(handler=cmd_jobs_show)
    p = actions.add_parser("cancel", help="cancel queued executions (--force: running too)")
    p.add_argument("id")
    p.add_argument("--force", action="store_true",
                   help="also cancel executions in progress (their results are refused)")
    p.add_argument("--reason", default="")
    p.set_defaults(handler=cmd_jobs_cancel)

    rollout = sub.add_parser("rollout", help="phased firmware rollouts")
    actions = rollout.add_subparsers(metavar="ACTION", required=True)
    for name, helptext, handler in (
            ("plan", "the dry-run flight plan", cmd_rollout_plan),
            ("start", "start a rollout (asks for the release version)", cmd_rollout_start)):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--release", required=True)
        p.add_argument("--group", required=True)
        p.add_argument("--waves", default="1,10,50,100",
                       help="cumulative percentages, or tag:KEY=V1,V2,... "
                            "(e.g. tag:deployment_ring=canary,early,general)")
        p.add_argument("--error-threshold", type=float, default=0.10)
        p.add_argument("--success-threshold", type=float, default=0.95)
        p.add_argument("--soak", type=float, default=300.0)
        p.add_argument("--max-offline-delta", type=float, default=0.20)
        p.add_argument("--auto-advance", action="store_true")
        p.add_argument("--two-person", action="store_true",
                       help="the final wave needs two different approvers")
        p.add_argument("--rate", type=int, help="devices started per minute")
        p.add_argument("--concurrency", type=int, default=100)
        p.add_argument("--timeout", type=float, default=1800.0)
        if name == "start":
            p.add_argument("--confirm", metavar="VERSION",
                           help="the release version, typed out")
        _format(p)
        p.set_defaults(handler=handler)
    p = actions.add_parser("status", help="waves, counts, gate evidence")
    p.add_argument("id")
    _format(p)
    p.set_defaults(handler=cmd_rollout_status)
    p = actions.add_parser("list", help="rollouts, newest first")
    p.add_argument("--active", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=cmd_rollout_list)
    for action, helptext in (("approve", "approve the next wave"),
                             ("halt", "stop starting devices"),
                             ("resume", "resume a halted rollout"),
                             ("cancel", "cancel the rollout (queued devices)"),
                             ("rollback", "previous version on every updated device")):
        p = actions.add_parser(action, help=helptext)
        p.add_argument("id")
        p.add_argument("--reason", default="")
        p.set_defaults(handler=cmd_rollout_action, action=action)

    audit = sub.add_parser("audit", help="the audit log")
    actions = audit.add_subparsers(metavar="ACTION", required=True)
    p = actions.add_parser("list", help="newest entries")
    p.add_argument("--action", help="e.g. rollout.* or job.cancel")
    p.add_argument("--actor")
    p.add_argument("--target")
    p.add_argument("--limit", type=int, default=50)
    _format(p)
    p.set_defaults(handler=cmd_audit_list)
    p = actions.add_parser("verify", help="check the hash chain; exit 1 if broken")
    p.set_defaults(handler=cmd_audit_verify)
