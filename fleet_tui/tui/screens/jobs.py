"""`:jobs`: the jobs (newest first) with their executions by state, a new job from the
device table's selection or a group (type, document, rate, concurrency, timeout, retries,
abort criteria, and the capability-gating preview before anything is sent), and cancel
with or without force, the difference explained before you choose.

Everything goes through ``service/job_control.py`` in workers.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from fleet_tui.domain.jobs import (
    EXECUTION_STATES,
    JOB_ACTIVE,
    AbortCriterion,
    JobError,
    JobSettings,
)
from fleet_tui.domain.roles import RoleError
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.jobs_store import JobRow
from fleet_tui.registry.registry import Registry
from fleet_tui.service.client import parse_assignments
from fleet_tui.service.job_control import Actor, JobPlan, Target, cancel_job, create_job, plan_job

JOB_ERRORS = (JobError, RoleError, RegistryError, ValueError)
SHOWN_STATES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED",
                "SKIPPED")
SHORT = {"QUEUED": "queued", "IN_PROGRESS": "running", "SUCCEEDED": "ok", "FAILED": "failed",
         "TIMED_OUT": "timeout", "CANCELED": "canceled", "SKIPPED": "skipped"}
JOBS_CSS = """
#jobs-table { height: 1fr; }
#jobs-status { height: auto; padding: 0 1; background: $boost; }
JobCreateScreen, CancelJobScreen { align: center middle; }
#job-form, #cancel-box {
    width: 95%; max-width: 110; height: auto; max-height: 95%; border: round $accent;
    padding: 0 1;
    background: $panel;
}
#cancel-box { height: auto; border: round $warning; }
#job-form Input { border: none; height: 1; padding: 0 1; }
#job-form Label { color: $text-muted; }
#job-preview { height: auto; margin-top: 1; }
#job-error { height: auto; color: $error; }
"""
CANCEL_EXPLAINED = (
    "c  cancel: queued executions are canceled; devices already updating run to the end "
    "and still report their result.\n"
    "f  force: in-progress executions are canceled too and their later updates are "
    "refused (an update already running on a device still finishes there, untracked).\n"
    "Esc  keep the job running.")


class CancelJobScreen(ModalScreen[str | None]):
    """Returns ``cancel``, ``force`` or None."""

    DEFAULT_CSS = JOBS_CSS
    HELP = CANCEL_EXPLAINED
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "choose('cancel')", "Cancel", id="cancel_job.cancel"),
        Binding("f", "choose('force')", "Force cancel", id="cancel_job.force"),
        Binding("escape", "choose('')", "Keep", id="cancel_job.keep"),
    ]

    def __init__(self, job: JobRow, counts: dict[str, int]) -> None:
        super().__init__()
        self.job, self.counts = job, counts

    def compose(self) -> ComposeResult:
        with Vertical(id="cancel-box"):
            yield Static(Text(f"cancel job {self.job.id}?", style="bold"))
            yield Static(f"{self.counts.get('QUEUED', 0)} queued, "
                         f"{self.counts.get('IN_PROGRESS', 0)} in progress")
            yield Static(CANCEL_EXPLAINED)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice or None)


class JobsScreen(Screen[None]):
    DEFAULT_CSS = JOBS_CSS
    HELP = ("Jobs, newest first, with their executions by state. n creates a job for the "
            "selected group, c cancels the highlighted job (with or without force), "
            "Esc goes back. From the device table, space selects devices and b makes a job "
            "of them.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="jobs.back"),
        Binding("n", "new", "New job", id="jobs.new"),
        Binding("c", "cancel", "Cancel job", id="jobs.cancel"),
    ]

    class Loaded(Message):
        def __init__(self, jobs: list[JobRow], counts: dict[str, dict[str, int]]) -> None:
            super().__init__()
            self.jobs, self.counts = jobs, counts

    class Done(Message):
        def __init__(self, note: str, ok: bool) -> None:
            super().__init__()
            self.note, self.ok = note, ok

    def __init__(self, registry: Registry, actor: Actor, *, group: str | None = None,
                 read_only: bool = False, clock: Any = time.time) -> None:
        super().__init__()
        self.registry, self.actor, self.group = registry, actor, group
        self.read_only, self.clock = read_only, clock
        self.jobs: list[JobRow] = []
        self.counts: dict[str, dict[str, int]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("jobs", style="bold"))
        yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="jobs-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("job", "type", "state", "progress",
                                              *(SHORT[s] for s in SHOWN_STATES))
        self._load()
        self.set_interval(2.0, self._load)

    def on_screen_resume(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="jobs-load")
    def _load(self) -> None:
        jobs = self.registry.jobs.list_jobs(limit=200)
        self.post_message(self.Loaded(jobs, self.registry.jobs.counts([j.id for j in jobs])))

    def on_jobs_screen_loaded(self, message: Loaded) -> None:
        # Unchanged data keeps the table as it is: a refill re-measures the columns after
        # the next frame, and a flicker at each refresh helps nobody.
        shown = tuple((j.id, j.status, tuple(sorted(message.counts.get(j.id, {}).items())))
                      for j in message.jobs)
        if shown == getattr(self, "_shown", None):
            return
        self._shown = shown
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        self.jobs, self.counts = message.jobs, message.counts
        for job in message.jobs:
            c = message.counts.get(job.id, {})
            total = sum(c.get(s, 0) for s in EXECUTION_STATES if s != "SKIPPED")
            done = sum(c.get(s, 0) for s in ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED",
                                             "REJECTED", "REMOVED"))
            filled = round(10 * done / total) if total else 10
            style = "green" if job.status == "COMPLETED" else "yellow" if (
                job.status in JOB_ACTIVE) else "red"
            table.add_row(job.id, job.job_type, Text(job.status.lower(), style=style),
                          Text("█" * filled + "░" * (10 - filled), style=style),
                          *(str(c.get(s, 0)) if c.get(s) else "·" for s in SHOWN_STATES),
                          key=job.id)
        if self.jobs:
            table.move_cursor(row=max(0, min(row, len(self.jobs) - 1)))
        else:
            self.query_one("#jobs-status", Static).update("no jobs yet: n creates one")

    def _refuse(self, what: str) -> bool:
        if self.read_only:
            self.query_one("#jobs-status", Static).update(
                Text(f"read-only: {what} refused", style="bold yellow"))
        return self.read_only

    def action_new(self) -> None:
        if not self._refuse("new job"):
            self.app.push_screen(JobCreateScreen(
                self.registry, self.actor, Target(group=self.group or "")
                if self.group else None), self._created)

    def _created(self, note: str | None) -> None:
        if note:
            self.query_one("#jobs-status", Static).update(Text(note, style="green"))
        self._load()

    def action_cancel(self) -> None:
        table = self.query_one(DataTable)
        if self._refuse("cancel") or not self.jobs or table.cursor_row < 0:
            return
        job = self.jobs[min(table.cursor_row, len(self.jobs) - 1)]
        if job.status not in JOB_ACTIVE:
            self.query_one("#jobs-status", Static).update(
                f"job {job.id} is {job.status.lower()}: nothing to cancel")
            return

        def chosen(choice: str | None) -> None:
            if choice:
                self._cancel(job.id, choice == "force")

        self.app.push_screen(CancelJobScreen(job, self.counts.get(job.id, {})), chosen)

    @work(thread=True, exclusive=True, group="jobs-cancel")
    def _cancel(self, job_id: str, force: bool) -> None:
        try:
            result = cancel_job(self.registry, job_id, self.actor, force=force)
            self.post_message(self.Done(result.explain(), True))
        except JOB_ERRORS as err:
            self.post_message(self.Done(f"cancel refused: {err}", False))

    def on_jobs_screen_done(self, message: Done) -> None:
        self.query_one("#jobs-status", Static).update(
            Text(message.note, style="green" if message.ok else "bold red"))
        self._load()


class JobCreateScreen(ModalScreen[str | None]):
    """A new job: every field, then Enter previews the capability gating (which devices
    take it, which are skipped and why); ctrl+s creates it. Returns the outcome."""

    DEFAULT_CSS = JOBS_CSS
    HELP = ("Fill in the job; Enter moves to the next field and, on the last, previews "
            "which devices take the job and which are skipped and why. ctrl+s creates the "
            "previewed job; Esc closes without creating.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="job_create.close"),
        Binding("ctrl+s", "create", "Create", id="job_create.create"),
    ]
    FIELDS = (("type", "type: reboot | diagnostic | command | config_update | "
                       "firmware_update", "reboot"),
              ("document", "document: command NAME · release VERSION · key=value …", ""),
              ("rate", "rate: devices started per minute (blank: no limit)", ""),
              ("concurrency", "concurrency", "100"),
              ("timeout", "timeout per device (s)", "600"),
              ("retries", "retries per device (0-10)", "0"),
              ("abort", "abort criteria: TYPE:PERCENT:MIN, … (e.g. FAILED:10:20)", ""))

    class Previewed(Message):
        def __init__(self, plan: JobPlan | None, error: str = "") -> None:
            super().__init__()
            self.plan, self.error = plan, error

    def __init__(self, registry: Registry, actor: Actor, target: Target | None, *,
                 job_id: str | None = None) -> None:
        super().__init__()
        self.registry, self.actor, self.target, self.job_id = registry, actor, target, job_id
        self.plan: JobPlan | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="job-form"):
            yield Static(Text("new job", style="bold"))
            if self.target is not None and self.target.device_ids is not None:
                yield Static(f"target: {len(self.target.device_ids)} selected devices")
            else:
                yield Label("target group")
                yield Input((self.target.group or "") if self.target else "",
                            id="job-group")
            for name, label, default in self.FIELDS:
                yield Label(label)
                yield Input(default, id=f"job-{name}")
            yield Static("", id="job-preview")
            yield Static("", id="job-error")

    def on_mount(self) -> None:
        first = self.query(Input).first()
        first.focus()

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        if event.input is not inputs[-1]:
            inputs[inputs.index(event.input) + 1].focus()
        else:
            self._start_preview()

    def _value(self, name: str) -> str:
        return self.query_one(f"#job-{name}", Input).value.strip()

    def _request(self) -> tuple[str, dict[str, Any], Target, JobSettings]:
        job_type = self._value("type")
        words = self._value("document").split()
        params: dict[str, Any] = {}
        if job_type == "command" and words:
            params["command"] = words[-1]
        elif job_type == "firmware_update" and words:
            params["release"] = words[-1]
        elif job_type == "config_update":
            params["config"] = parse_assignments(words)
        abort = []
        for part in filter(None, (p.strip() for p in self._value("abort").split(","))):
            bits = part.split(":")
            if len(bits) != 3:
                raise JobError(f"abort {part!r}: expected TYPE:PERCENT:MIN, e.g. FAILED:10:20")
            abort.append(AbortCriterion(bits[0].upper(), float(bits[1]), int(bits[2])))
        rate = self._value("rate")
        timeout = self._value("timeout")
        settings = JobSettings(concurrency=int(self._value("concurrency") or 100),
                               rate_per_minute=int(rate) if rate else None,
                               timeout_s=float(timeout) if timeout else None,
                               retries=int(self._value("retries") or 0), abort=tuple(abort))
        target = self.target
        if target is None or target.device_ids is None:
            group = self._value("group")
            if not group:
                raise JobError("target group: give a group name")
            target = Target(group=group)
        return job_type, params, target, settings

    def _start_preview(self) -> None:
        try:
            request = self._request()
        except JOB_ERRORS as err:
            self.query_one("#job-error", Static).update(str(err))
            return
        self.query_one("#job-error", Static).update("")
        self._preview(*request)

    @work(thread=True, exclusive=True, group="job-preview")
    def _preview(self, job_type: str, params: dict[str, Any], target: Target,
                 settings: JobSettings) -> None:
        try:
            self.post_message(self.Previewed(plan_job(self.registry, job_type, params, target,
                                                      settings, job_id=self.job_id)))
        except JOB_ERRORS as err:
            self.post_message(self.Previewed(None, str(err)))

    def on_job_create_screen_previewed(self, message: Previewed) -> None:
        self.plan = message.plan
        preview = self.query_one("#job-preview", Static)
        if message.plan is None:
            preview.update("")
            self.query_one("#job-error", Static).update(message.error)
            return
        plan = message.plan
        text = Text.assemble(("preview (nothing sent yet): ", "bold"),
                             (f"{len(plan.queued)} devices take it", "green"),
                             f", {len(plan.skipped)} skipped")
        for reason, n in Counter(r for _, r in plan.skipped).most_common(5):
            text.append(f"\n  {n:>4}  {reason}", style="yellow")
        estimate = plan.estimated_s()
        text.append(f"\nestimated {estimate / 60:.1f} min" if estimate is not None
                    else "\nno rate limit")
        text.append("\nctrl+s creates it", style="yellow" if plan.queued else "dim")
        preview.update(text)

    def action_create(self) -> None:
        if self.plan is None:
            self.query_one("#job-error", Static).update("Enter on the last field previews "
                                                        "the job first")
            return
        self._create(self.plan)

    @work(thread=True, exclusive=True, group="job-create")
    def _create(self, plan: JobPlan) -> None:
        try:
            create_job(self.registry, plan, self.actor)
            note = f"job {plan.job_id} created: {len(plan.queued)} devices"
            self.app.call_from_thread(self.dismiss, note)
        except JOB_ERRORS as err:
            self.app.call_from_thread(self.query_one("#job-error", Static).update, str(err))

    def action_close(self) -> None:
        self.dismiss(None)
