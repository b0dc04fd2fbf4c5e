"""`:rollouts`: the rollouts (newest first; Enter opens one, n plans a new one) and the
rollout monitor: the waves as a progress ladder with each wave's devices by state, the
gate evidence as it accrues (updated cohort against the not-yet-updated one, with
sparklines), the reason when a gate halts it, the audit entries as they land, and the
operator's keys: a approve, h halt, r resume, c cancel, R roll back.

Every read and every action goes through the service layer (``service/rollouts.py``,
``service/rollout_progress.py``) in a worker; results come back as messages.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from fleet_tui.domain.jobs import JobError
from fleet_tui.domain.roles import RoleError
from fleet_tui.domain.rollout import (
    COMPLETED,
    HALTED,
    ROLLED_BACK,
    ROLLING_BACK,
    WAITING_APPROVAL,
    Gates,
    RolloutError,
)
from fleet_tui.registry.audit import AuditRecord
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry
from fleet_tui.registry.rollouts_store import RolloutRow
from fleet_tui.service.job_control import Actor
from fleet_tui.service.rollout_progress import (
    PROGRESS_STATES,
    WaveProgress,
    rollout_audit,
    wave_progress,
)
from fleet_tui.service.rollouts import act
from fleet_tui.tui.screens.confirm import YesNoScreen

REFRESH_S = 1.0
STATUS_STYLE = {"RUNNING": "bold cyan", WAITING_APPROVAL: "bold yellow", HALTED: "bold red",
                COMPLETED: "bold green", ROLLING_BACK: "bold magenta",
                ROLLED_BACK: "magenta", "CANCELED": "dim"}
WAVE_MARK = {"PENDING": ("·", "dim"), "RUNNING": ("▶", "cyan"), "PASSED": ("✓", "green"),
             "FAILED": ("✗", "red"), "CANCELED": ("-", "dim")}
SPARK = "▁▂▃▄▅▆▇█"
# Short column labels: the ladder fits 80 columns (the help names them in full).
LADDER_LABELS = {"queued": "queued", "downloading": "dload", "applying": "apply",
                 "confirmed": "ok", "failed": "failed", "rolled back": "r/back"}
HEALTH_CHECKS = (("offline_rate", "offline"), ("reboot_loop_rate", "reboot loops"),
                 ("anomaly_rate", "anomalies"))
ACTION_ERRORS = (RolloutError, RoleError, JobError, RegistryError)
MONITOR_CSS = """
#rollout-body { height: 1fr; padding: 0 1; }
#rollout-title, #rollout-reason, #rollout-approvals { height: auto; }
#wave-ladder { height: auto; max-height: 12; }
#rollout-evidence, #rollout-audit { height: auto; margin-top: 1; }
#rollout-audit { text-wrap: nowrap; text-overflow: ellipsis; }
#rollout-status { height: auto; padding: 0 1; background: $boost; }
#rollouts-table { height: 1fr; }
"""


def sparkline(values: list[float]) -> str:
    """A text sparkline scaled to 0..max (rates: a flat zero line reads as all clear)."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))]
                   for v in values)


def progress_bar(done: int, total: int, width: int = 10) -> str:
    filled = 0 if total == 0 else round(width * done / total)
    return "█" * filled + "░" * (width - filled)


def status_text(status: str) -> Text:
    return Text(status.replace("_", " ").lower(), style=STATUS_STYLE.get(status, ""))


class RolloutsScreen(Screen[None]):
    """The rollouts, newest first."""

    DEFAULT_CSS = MONITOR_CSS
    HELP = ("Rollouts, newest first: release, target group, state, current wave. Enter opens "
            "the monitor, n plans a new rollout (the wizard), Esc goes back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="rollouts.back"),
        Binding("enter", "open", "Monitor", id="rollouts.open"),
        Binding("n", "new", "New rollout", id="rollouts.new"),
    ]

    class Loaded(Message):
        def __init__(self, rollouts: list[RolloutRow]) -> None:
            super().__init__()
            self.rollouts = rollouts

    def __init__(self, registry: Registry, actor: Actor, *, read_only: bool = False,
                 clock: Any = time.time) -> None:
        super().__init__()
        self.registry, self.actor, self.read_only, self.clock = (registry, actor, read_only,
                                                                 clock)
        self.ids: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("rollouts", style="bold"), id="rollouts-title")
        yield DataTable(id="rollouts-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="rollout-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("rollout", "release", "group", "state", "wave",
                                              "reason")
        self._load()
        self.set_interval(REFRESH_S * 2, self._load)

    def on_screen_resume(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="rollouts-load")
    def _load(self) -> None:
        self.post_message(self.Loaded(self.registry.rollouts.list_rollouts(limit=200)))

    def on_rollouts_screen_loaded(self, message: Loaded) -> None:
        shown = tuple((r.id, r.status, r.current_wave, r.reason) for r in message.rollouts)
        if shown == getattr(self, "_shown", None):
            return  # unchanged: no refill (see JobsScreen)
        self._shown = shown
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        self.ids = [r.id for r in message.rollouts]
        for r in message.rollouts:
            wave = r.wave
            table.add_row(r.id, f"{r.previous_version or '?'} → {r.release_version}",
                          r.group_name, status_text(r.status),
                          f"{r.current_wave + 1}/{len(r.waves)} {wave.name if wave else ''}",
                          r.reason[:60], key=r.id)
        if self.ids:
            table.move_cursor(row=max(0, min(row, len(self.ids) - 1)))
        else:
            self.query_one("#rollout-status", Static).update(
                "no rollouts yet: n plans one")

    @on(DataTable.RowSelected, "#rollouts-table")
    def _row_selected(self) -> None:
        self.action_open()  # Enter on the table (the table's own binding takes the key)

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.ids and table.cursor_row >= 0:
            self.app.push_screen(RolloutMonitorScreen(
                self.registry, self.ids[table.cursor_row], self.actor,
                read_only=self.read_only, clock=self.clock))

    def action_new(self) -> None:
        from fleet_tui.tui.screens.rollout_wizard import RolloutWizardScreen

        if self.read_only:
            self.query_one("#rollout-status", Static).update(
                Text("read-only: rollouts cannot be started", style="yellow"))
            return
        self.app.push_screen(RolloutWizardScreen(self.registry, self.actor, clock=self.clock))


class RolloutMonitorScreen(Screen[None]):
    """One rollout, live."""

    DEFAULT_CSS = MONITOR_CSS
    HELP = ("The rollout's waves (▶ running, ✓ passed, ✗ failed) with each wave's devices "
            "by state (queued, dload: downloading, apply: applying, ok: confirmed, failed, "
            "r/back: rolled back), the gate evidence (updated cohort against the devices "
            "not yet updated; the trend on the right), the halt reason, the audit entries. "
            "a approves the next wave, h halts, r resumes, c cancels, R rolls back the "
            "updated devices (both ask first). Esc goes back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="monitor.back"),
        Binding("a", "rollout('approve')", "Approve", id="monitor.approve"),
        Binding("h", "rollout('halt')", "Halt", id="monitor.halt"),
        Binding("r", "rollout('resume')", "Resume", id="monitor.resume"),
        Binding("c", "rollout('cancel')", "Cancel", id="monitor.cancel"),
        Binding("R", "rollout('rollback')", "Roll back", id="monitor.rollback"),
    ]
    CONFIRM: ClassVar[dict[str, str]] = {
        "cancel": "Stop the rollout here: queued devices of the running wave are canceled, "
                  "devices already updated stay on the new release.",
        "rollback": "Set the previous release as desired for every device the rollout "
                    "updated (the running wave's in-progress devices are force-canceled "
                    "first). This is a job of its own, shown in :jobs.",
    }

    class Loaded(Message):
        def __init__(self, rollout: RolloutRow | None, waves: list[WaveProgress],
                     audit: list[AuditRecord], error: str = "") -> None:
            super().__init__()
            self.rollout, self.waves, self.audit, self.error = rollout, waves, audit, error

    class Acted(Message):
        def __init__(self, note: str, ok: bool) -> None:
            super().__init__()
            self.note, self.ok = note, ok

    def __init__(self, registry: Registry, rollout_id: str, actor: Actor, *,
                 read_only: bool = False, clock: Any = time.time) -> None:
        super().__init__()
        self.registry, self.rollout_id, self.actor = registry, rollout_id, actor
        self.read_only, self.clock = read_only, clock
        self.rollout: RolloutRow | None = None
        # Per (wave, check): the updated cohort's figure at each refresh, for the sparklines.
        self.history: dict[tuple[int, str], list[float]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="rollout-body"):
            yield Static("", id="rollout-title")
            yield Static("", id="rollout-reason")
            yield DataTable(id="wave-ladder", cursor_type="none", show_cursor=False)
            yield Static("", id="rollout-approvals")
            yield Static("", id="rollout-evidence")
            yield Static("", id="rollout-audit")
        yield Static("", id="rollout-status")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(REFRESH_S, self.reload)

    def reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="monitor-load")
    def _load(self) -> None:
        try:
            rollout = self.registry.rollouts.get(self.rollout_id)
            self.post_message(self.Loaded(rollout, wave_progress(self.registry, rollout),
                                          rollout_audit(self.registry, rollout)))
        except RegistryError as err:
            self.post_message(self.Loaded(None, [], [], str(err)))

    # ------------------------------------------------------------------ render

    def on_rollout_monitor_screen_loaded(self, message: Loaded) -> None:
        if message.rollout is None:
            self.query_one("#rollout-status", Static).update(
                Text(message.error, style="bold red"))
            return
        r = self.rollout = message.rollout
        self.query_one("#rollout-title", Static).update(Text.assemble(
            (r.id, "bold"), f"  {r.previous_version or '?'} → ", (r.release_version, "bold"),
            f"  group {r.group_name}  ", status_text(r.status)))
        reason_style = "bold red" if r.status == HALTED else "yellow" if (
            r.status == WAITING_APPROVAL) else ""
        reason = Text(r.reason or "", style=reason_style)
        if r.status == HALTED:
            reason = Text("halted: ", style="bold red") + reason
        self.query_one("#rollout-reason", Static).update(reason)
        self._render_ladder(message.waves)
        self._render_approvals(r)
        self._render_evidence(r, message.waves)
        self._render_audit(message.audit)

    def _render_ladder(self, waves: list[WaveProgress]) -> None:
        table = self.query_one(DataTable)
        if not table.columns:
            # Fixed widths, known from the first load: auto-sized columns were re-measured
            # after each refresh, so a frame could show the header at its old width.
            names = max((len(w.name) for w in waves), default=4)
            devices = max((len(str(w.devices)) for w in waves), default=3)
            table.add_column("wave", width=max(4, names + 2))
            table.add_column("dev", width=max(3, devices))
            table.add_column("progress", width=8)
            for state in PROGRESS_STATES:
                label = LADDER_LABELS[state]
                table.add_column(label, width=max(len(label), 3))
            table.add_column("approvals", width=24)
        table.clear()
        for w in waves:
            mark, style = WAVE_MARK.get(w.status, ("?", ""))
            cells: list[Any] = [Text(f"{mark} {w.name}", style=style), str(w.devices),
                                Text(progress_bar(w.done, w.devices, 8), style=style)]
            for state in PROGRESS_STATES:
                n = w.counts.get(state, 0)
                bad = state in ("failed", "rolled back") and n
                cells.append(Text(str(n) if n else "·", style="bold red" if bad else ""))
            cells.append(", ".join(w.approvals) or "")
            table.add_row(*cells)

    def _render_approvals(self, r: RolloutRow) -> None:
        gates = Gates.from_dict(r.gates)
        next_index = r.current_wave + 1
        text = Text()
        if r.status == WAITING_APPROVAL and next_index < len(r.waves):
            text.append(f"a approves wave {r.waves[next_index].name}", style="yellow")
        if gates.two_person:
            approvals = r.waves[r.current_wave].approvals if r.waves else []
            text.append("  two-person rule: the final wave needs two operators")
            if next_index == len(r.waves) - 1 and approvals:
                text.append(f" (approved by {', '.join(approvals)}; one more)", style="bold")
        if gates.auto_advance:
            text.append("  auto-advance on")
        self.query_one("#rollout-approvals", Static).update(text)

    def _render_evidence(self, r: RolloutRow, waves: list[WaveProgress]) -> None:
        index = r.current_wave
        evidence = waves[index].evidence if index < len(waves) else None
        widget = self.query_one("#rollout-evidence", Static)
        if not evidence:
            widget.update(Text("gate evidence: none yet (the wave has not been judged)",
                               style="dim"))
            return
        table = Table(box=None, padding=(0, 1), show_edge=False, expand=False,
                      title=f"gate evidence · wave {evidence.get('wave', '')}",
                      title_justify="left", title_style="bold")
        for column in ("check", "updated", "not yet", "limit", "trend"):
            table.add_column(column, no_wrap=True)
        failed = evidence.get("failed", 0)
        targeted = evidence.get("targeted", 0)
        share = float(evidence.get("failed_share", 0.0))
        threshold = float(evidence.get("error_threshold", 0.0))
        table.add_row("failed", Text(f"{failed}/{targeted} {share:.0%}",
                                     style="bold red" if failed and share >= threshold
                                     else ""), "", f"< {threshold:.0%}",
                      self._trend(index, "failed", share))
        by_hw = waves[index].failed_by_hardware
        if by_hw:
            table.add_row("failed on", Text(" ".join(f"{hw}:{n}" for hw, n in sorted(
                by_hw.items())), style="bold red"), "", "", "")
        health = evidence.get("health") or {}
        for key, label in HEALTH_CHECKS:
            figures = health.get(key)
            if not isinstance(figures, dict):
                continue
            updated, base = float(figures["updated"]), float(figures["baseline"])
            limit = float(figures["limit_delta"])
            bad = updated - base > limit
            table.add_row(label, Text(f"{updated:.0%}", style="bold red" if bad else ""),
                          f"{base:.0%}", f"+{limit:.0%}", self._trend(index, key, updated))
        bounds = {m.metric: m for m in Gates.from_dict(r.gates).metrics}
        for key, figures in health.items():
            if key.startswith("metric:") and isinstance(figures, dict):
                gate = bounds.get(key[7:])
                bound = ""
                if gate is not None:
                    bound = " ".join(b for b in (
                        f">={gate.min_ratio:g}x" if gate.min_ratio is not None else "",
                        f"<={gate.max_ratio:g}x" if gate.max_ratio is not None else "") if b)
                table.add_row(key[7:], f"{figures['updated']:g}", f"{figures['baseline']:g}",
                              f"{bound} (now {figures['ratio']:.2f}x)",
                              self._trend(index, key, float(figures["updated"])))
        if "note" in health:
            table.add_row(Text(health["note"], style="dim"), "", "", "", "")
        widget.update(table)

    def _trend(self, wave: int, key: str, value: float) -> str:
        series = self.history.setdefault((wave, key), [])
        if not series or series[-1] != value:
            series.append(value)
        del series[:-20]
        return sparkline(series)

    def _render_audit(self, entries: list[AuditRecord]) -> None:
        text = Text("audit\n", style="bold")
        for e in entries[:6]:
            when = time.strftime("%H:%M:%S", time.gmtime(e.ts))
            text.append(f"{when} ", style="dim")
            text.append(f"{e.actor:<8} ", style="bold")
            text.append(f"{e.action:<20} ")
            text.append(_audit_note(e) + "\n", style="dim")
        self.query_one("#rollout-audit", Static).update(text)

    # ----------------------------------------------------------------- actions

    def action_rollout(self, action: str) -> None:
        status = self.query_one("#rollout-status", Static)
        if self.read_only:
            status.update(Text(f"read-only: {action} refused", style="bold yellow"))
            return
        explanation = self.CONFIRM.get(action)
        if explanation is None:
            self._act(action)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(action)
            else:
                status.update(f"{action}: not done")

        title = "roll back?" if action == "rollback" else "cancel the rollout?"
        self.app.push_screen(YesNoScreen(title, explanation), answered)

    @work(thread=True, exclusive=True, group="monitor-act")
    def _act(self, action: str) -> None:
        try:
            row = act(self.registry, self.rollout_id, action, self.actor)
            note = f"{action} by {self.actor.name}: rollout {row.status.lower()}"
            ok = True
        except ACTION_ERRORS as err:
            note, ok = f"{action} refused: {err}", False
        self.post_message(self.Acted(note, ok))

    def on_rollout_monitor_screen_acted(self, message: Acted) -> None:
        self.query_one("#rollout-status", Static).update(
            Text(message.note, style="green" if message.ok else "bold red"))
        self.reload()  # the audit entry shows at once


def _audit_note(e: AuditRecord) -> str:
    d = e.details
    for key in ("gate", "reason", "wave", "note"):
        if d.get(key):
            return str(d[key])[:70]
    return ""
