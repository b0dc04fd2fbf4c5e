"""The rollout wizard: release (from the manifest, with what each supports) -> target
group -> waves and gates -> rate and concurrency -> the dry-run flight plan (devices per
wave by hardware revision and site, devices skipped and why, estimated duration). s starts
it once the operator types the release version.

Enter moves to the next field and, on a step's last field, to the next step; Esc goes one
step back. The plan and the start are the service's (``plan_rollout``/``start_rollout``),
run in workers.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import ContentSwitcher, Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from fleet_tui.domain.jobs import JobError, JobSettings
from fleet_tui.domain.roles import RoleError
from fleet_tui.domain.rollout import Gates, MetricGate, RolloutError, WaveSpec
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry, ReleaseInfo
from fleet_tui.service.job_control import Actor
from fleet_tui.service.rollouts import RolloutPlan, plan_rollout, start_rollout
from fleet_tui.tui.screens.confirm import TypeToConfirmScreen
from fleet_tui.tui.widgets.group_tree import all_group_names

STEPS = ("release", "group", "gates", "rate", "plan")
STEP_TITLES = {"release": "1/5 release", "group": "2/5 target group",
               "gates": "3/5 waves and gates", "rate": "4/5 rate and concurrency",
               "plan": "5/5 dry-run flight plan"}
METRIC_RE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9.]+)\s*$")
PLAN_ERRORS = (RolloutError, JobError, RegistryError, RoleError, ValueError)
WIZARD_CSS = """
#wizard-body { padding: 0 1; height: 1fr; }
#wizard-step { height: 1; text-style: bold; background: $boost; padding: 0 1; }
#wizard-steps { height: 1fr; }
.wizard-step Input { border: none; height: 1; padding: 0 1; }
.wizard-step Label { color: $text-muted; margin-top: 1; }
#releases, #groups-hint { height: auto; max-height: 12; }
#wizard-error { height: auto; color: $error; padding: 0 1; }
#plan-view { height: 1fr; }
"""


def parse_metrics(text: str) -> tuple[MetricGate, ...]:
    """``heap_free>=0.8, cpu_pct<=1.5``: the updated cohort's mean against the rest's."""
    gates = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = METRIC_RE.match(part)
        if m is None:
            raise RolloutError(f"metrics: {part!r}: expected METRIC>=RATIO or METRIC<=RATIO, "
                               "e.g. heap_free>=0.8")
        name, op, value = m.group(1), m.group(2), float(m.group(3))
        gates.append(MetricGate(name, min_ratio=value if op == ">=" else None,
                                max_ratio=value if op == "<=" else None))
    return tuple(gates)


def _number(text: str, field: str, *, blank: float | None = None) -> float | None:
    text = text.strip().rstrip("%s")
    if not text:
        return blank
    try:
        return float(text)
    except ValueError:
        raise RolloutError(f"{field}: {text!r} is not a number") from None


def _yes(text: str, field: str) -> bool:
    value = text.strip().lower()
    if value not in ("y", "yes", "n", "no", ""):
        raise RolloutError(f"{field}: expected y or n, got {text!r}")
    return value in ("y", "yes")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unbounded (no rate limit: as fast as the devices take it) + soak per wave"
    minutes, s = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {s:02d} s"


def release_label(r: ReleaseInfo) -> Text:
    return Text.assemble((f"{r.version:<8}", "bold"), f" hw {','.join(r.hardware_revs):<18}",
                         (f" {r.notes}", "dim"))


class RolloutWizardScreen(Screen[None]):
    DEFAULT_CSS = WIZARD_CSS
    HELP = ("Plan a rollout step by step: pick the release (Enter), type the target group "
            "(→ accepts the suggestion), set waves (1,10,50,100 or tag:deployment_ring="
            "canary,early,general) and gates, then rate and concurrency. The last step is the "
            "dry-run flight plan; s starts the rollout once you type the release version. "
            "Esc goes one step back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="wizard.back"),
        Binding("s", "start", "Start", id="wizard.start"),
    ]

    class Planned(Message):
        def __init__(self, plan: RolloutPlan | None, error: str = "") -> None:
            super().__init__()
            self.plan, self.error = plan, error

    class Started(Message):
        def __init__(self, rollout_id: str | None, error: str = "") -> None:
            super().__init__()
            self.rollout_id, self.error = rollout_id, error

    def __init__(self, registry: Registry, actor: Actor, *, clock: Any = time.time,
                 rollout_id: str | None = None) -> None:
        super().__init__()
        self.registry, self.actor, self.clock = registry, actor, clock
        self.rollout_id = rollout_id  # fixed in tests; else one is made from the release
        self.releases = registry.list_releases()
        self.groups = sorted(all_group_names(registry.group_tree()))
        self.step = 0
        self.release: str | None = None
        self.plan: RolloutPlan | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="wizard-body"):
            yield Static("", id="wizard-step")
            with ContentSwitcher(initial="release", id="wizard-steps"):
                with Vertical(id="release", classes="wizard-step"):
                    yield Label("release (from the manifest: hardware it supports, notes)")
                    yield OptionList(*[Option(release_label(r), id=r.version)
                                       for r in reversed(self.releases)], id="releases")
                    yield Static("", id="release-keys")
                with Vertical(id="group", classes="wizard-step"):
                    yield Label("target group (→ accepts the suggestion)")
                    yield Input(placeholder="group name", id="group-input",
                                suggester=SuggestFromList(self.groups, case_sensitive=False))
                    yield Static("", id="groups-hint")
                with VerticalScroll(id="gates", classes="wizard-step"):
                    yield Label("waves: cumulative % or tag:KEY=V1,V2,…")
                    yield Input("1,10,50,100", id="waves-input")
                    yield Label("error threshold: failed share of a wave that halts it (%)")
                    yield Input("10", id="error-input")
                    yield Label("success threshold: confirmed share that passes a wave (%)")
                    yield Input("95", id="success-input")
                    yield Label("soak: online and healthy on the new version (s)")
                    yield Input("300", id="soak-input")
                    yield Label("health metrics, updated/rest mean ratio "
                                "(e.g. heap_free>=0.8, cpu_pct<=1.5)")
                    yield Input("", id="metrics-input")
                    yield Label("two-person rule for the final wave (y/n)")
                    yield Input("n", id="two-person-input")
                with Vertical(id="rate", classes="wizard-step"):
                    yield Label("rate: devices started per minute (blank: no limit)")
                    yield Input("60", id="rate-input")
                    yield Label("concurrency: devices updating at once")
                    yield Input("20", id="concurrency-input")
                    yield Label("timeout per device (s)")
                    yield Input("600", id="timeout-input")
                with VerticalScroll(id="plan", classes="wizard-step"):
                    yield Static("", id="plan-view")
            yield Static("", id="wizard-error")
        yield Footer()

    def on_mount(self) -> None:
        self._show(0)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return self.plan is not None and STEPS[self.step] == "plan"
        return True

    # -------------------------------------------------------------- stepping

    def _show(self, step: int) -> None:
        self.step = step
        name = STEPS[step]
        self.query_one(ContentSwitcher).current = name
        self.query_one("#wizard-step", Static).update(
            f"new rollout · {STEP_TITLES[name]}"
            + (f" · {self.release}" if self.release and step > 0 else ""))
        self.query_one("#wizard-error", Static).update("")
        focus = {"release": "#releases", "group": "#group-input", "gates": "#waves-input",
                 "rate": "#rate-input", "plan": "#plan"}[name]
        self.query_one(focus).focus()
        self.refresh_bindings()

    def _error(self, text: str) -> None:
        self.query_one("#wizard-error", Static).update(Text(text, style="bold red"))

    def action_back(self) -> None:
        if self.step == 0:
            self.app.pop_screen()
        else:
            self.plan = None
            self._show(self.step - 1)

    @on(OptionList.OptionHighlighted, "#releases")
    def _release_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        release = next((r for r in self.releases if r.version == event.option.id), None)
        if release is not None:
            self.query_one("#release-keys", Static).update(Text(
                f"understands desired keys: {', '.join(release.desired_keys)}", style="dim"))

    @on(OptionList.OptionSelected, "#releases")
    def _release_selected(self, event: OptionList.OptionSelected) -> None:
        self.release = event.option.id
        self._show(1)

    @on(Input.Changed, "#group-input")
    def _group_typed(self, event: Input.Changed) -> None:
        typed = event.value.strip().lower()
        matches = [g for g in self.groups if typed in g.lower()][:8]
        more = len([g for g in self.groups if typed in g.lower()]) - len(matches)
        self.query_one("#groups-hint", Static).update(Text(
            "  ".join(matches) + (f"  (+{more} more)" if more > 0 else ""), style="dim"))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        step = self.query_one(f"#{STEPS[self.step]}")
        inputs = list(step.query(Input))
        if event.input in inputs and event.input is not inputs[-1]:
            inputs[inputs.index(event.input) + 1].focus()
            return
        try:
            self._validate(STEPS[self.step])
        except PLAN_ERRORS as err:
            self._error(str(err))
            return
        if STEPS[self.step] == "rate":
            self.query_one("#plan-view", Static).update(Text("planning…", style="dim"))
            self._show(4)
            self._plan(*self._choices())
        else:
            self._show(self.step + 1)

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value

    def _validate(self, step: str) -> None:
        if step == "group" and self._value("group-input").strip() not in self.groups:
            raise RolloutError(f"group {self._value('group-input').strip()!r}: no such group")
        if step in ("gates", "rate"):
            self._choices()

    def _choices(self) -> tuple[str, WaveSpec, Gates, JobSettings]:
        spec = WaveSpec.parse(self._value("waves-input"))
        gates = Gates(
            error_threshold=(_number(self._value("error-input"), "error threshold") or 0) / 100,
            success_threshold=(_number(self._value("success-input"), "success threshold")
                               or 0) / 100,
            soak_s=_number(self._value("soak-input"), "soak", blank=0.0) or 0.0,
            metrics=parse_metrics(self._value("metrics-input")),
            two_person=_yes(self._value("two-person-input"), "two-person rule"))
        rate = _number(self._value("rate-input"), "rate")
        timeout = _number(self._value("timeout-input"), "timeout")
        settings = JobSettings(
            concurrency=int(_number(self._value("concurrency-input"), "concurrency",
                                    blank=100) or 100),
            rate_per_minute=int(rate) if rate else None,
            timeout_s=timeout if timeout else None, soak_s=gates.soak_s)
        return self._value("group-input").strip(), spec, gates, settings

    # --------------------------------------------------------------- the plan

    @work(thread=True, exclusive=True, group="wizard-plan")
    def _plan(self, group: str, spec: WaveSpec, gates: Gates, settings: JobSettings) -> None:
        assert self.release is not None
        try:
            plan = plan_rollout(self.registry, self.release, group, spec=spec, gates=gates,
                                job_settings=settings, rollout_id=self.rollout_id)
            self.post_message(self.Planned(plan))
        except PLAN_ERRORS as err:
            self.post_message(self.Planned(None, str(err)))

    def on_rollout_wizard_screen_planned(self, message: Planned) -> None:
        view = self.query_one("#plan-view", Static)
        self.plan = message.plan
        self.refresh_bindings()
        if message.plan is None:
            view.update("")
            self._error(f"no plan: {message.error} (Esc goes back to change it)")
            return
        view.update(render_plan(message.plan))

    def action_start(self) -> None:
        plan = self.plan
        if plan is None:
            return
        devices = sum(len(w.device_ids) for w in plan.flight.waves)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._start(plan)

        self.app.push_screen(TypeToConfirmScreen(
            f"start rollout of {plan.release} to {plan.group}?",
            f"{devices} devices in {len(plan.flight.waves)} waves; the first wave starts "
            "now.", plan.release), confirmed)

    @work(thread=True, exclusive=True, group="wizard-start")
    def _start(self, plan: RolloutPlan) -> None:
        try:
            row = start_rollout(self.registry, plan, self.actor, confirm=plan.release)
            self.post_message(self.Started(row.id))
        except PLAN_ERRORS as err:
            self.post_message(self.Started(None, str(err)))

    def on_rollout_wizard_screen_started(self, message: Started) -> None:
        from fleet_tui.tui.screens.rollouts import RolloutMonitorScreen

        if message.rollout_id is None:
            self._error(f"not started: {message.error}")
            return
        self.app.switch_screen(RolloutMonitorScreen(self.registry, message.rollout_id,
                                                    self.actor, clock=self.clock))


def render_plan(plan: RolloutPlan) -> Table:
    """The flight plan as the operator reads it before starting."""
    outer = Table.grid(padding=(0, 0))
    head = Text.assemble(
        ("dry run: nothing is sent yet. ", "bold"),
        f"{plan.previous_version or '?'} → ", (plan.release, "bold"), f" to {plan.group}, "
        f"estimated {duration(plan.flight.estimated_s)}")
    outer.add_row(head)
    waves = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("wave", "devices", "by hardware", "by site"):
        waves.add_column(column, no_wrap=column != "by site")
    for w in plan.flight.waves:
        hw = " ".join(f"{k}:{v}" for k, v in w.by_hardware.items())
        sites = " ".join(f"{k}:{v}" for k, v in w.by_site.items())
        waves.add_row(f"{w.index + 1} {w.name}", str(len(w.device_ids)), hw, sites)
    outer.add_row(waves)
    reasons = Counter(reason for _, reason in plan.flight.skipped)
    skipped = Text(f"skipped: {len(plan.flight.skipped)} devices", style="bold")
    for reason, n in reasons.most_common(4):
        skipped.append(f"\n  {n:>4}  {reason}", style="yellow")
    outer.add_row(skipped)
    g = plan.gates
    outer.add_row(Text(
        f"gates: halt at {g.error_threshold:.0%} failed · pass at {g.success_threshold:.0%} "
        f"confirmed · soak {g.soak_s:g} s"
        + (f" · metrics {', '.join(m.metric for m in g.metrics)}" if g.metrics else "")
        + (" · two-person rule" if g.two_person else ""), style="dim"))
    outer.add_row(Text("s starts it (you will type the release version) · Esc changes it",
                       style="yellow"))
    return outer
