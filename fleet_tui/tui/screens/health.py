"""`:health`: the selected group's presence and health counts, sparklines of the key metrics
over the last hour or day, a chart of one metric, the anomaly list (device, metric, score)
and the devices gone dark; Enter on any of them opens the device."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Sparkline, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from fleet_tui.config import Settings
from fleet_tui.domain.health import is_gone_dark
from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import Registry
from fleet_tui.service.alerts import list_alerts, recent_alert_counts
from fleet_tui.service.health_report import group_health_report
from fleet_tui.tui.screens.device import bucket_means

HEALTH_ORDER = ("healthy", "degraded", "unhealthy", None)
METRICS = ("heap_free", "rssi", "cpu_pct", "temp_c", "errors")
SPANS = {"hour": (60, 3600), "day": (3600, 86400)}  # bucket width, span (seconds)
RELOAD_EVERY_S = 5.0


@dataclass(slots=True)
class HealthData:
    online: Counter[bool] = field(default_factory=Counter)
    health: Counter[str | None] = field(default_factory=Counter)
    series: dict[str, list[float]] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    gone_dark: list[tuple[str, float]] = field(default_factory=list)  # id, last seen
    alerts_recent: int = 0  # raised in the last automation.recent_alerts_s
    alerts_open: int = 0


class HealthScreen(Screen[None]):
    HELP = ("Presence and health of the selected group's devices (from their latest "
            "telemetry), sparklines of the group's metrics (h: last hour / day), a chart of "
            "one metric (m: next metric), anomalies (devices whose latest value is an outlier "
            "against the group: robust MAD and z-score) and devices gone dark (silent for "
            "more than the configured intervals). Enter opens the highlighted device. "
            "Esc goes back.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.go_back", "Back", id="health.back"),
        Binding("h", "span", "Hour/day", id="health.span"),
        Binding("m", "metric", "Metric", id="health.metric"),
        Binding("r", "reload", "Reload", id="health.reload"),
    ]

    class Loaded(Message):
        def __init__(self, data: HealthData, error: str | None = None) -> None:
            super().__init__()
            self.data = data
            self.error = error

    def __init__(self, registry: Registry, group: str | None, settings: Settings | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.registry = registry
        self.group = group
        self.settings = settings or Settings(db="sqlite://")
        self.clock = clock
        self.span = "hour"
        self.metric = "temp_c"
        self.counts: dict[str, int] = {}
        self.data = HealthData()
        self._last_reload = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"health · {self.group or 'all devices'}", style="bold"),
                     id="health-title")
        with Horizontal(id="health-top"):
            yield Static("loading…", id="health-counts")
            with Vertical(id="health-sparks"):
                for metric in METRICS:
                    with Horizontal(classes="spark-row"):
                        yield Static(metric, classes="spark-label", id=f"hlabel-{metric}")
                        yield Sparkline([], classes="spark", id=f"hspark-{metric}")
        with Horizontal(id="health-bottom"):
            yield PlotextPlot(id="health-chart")
            yield OptionList(id="health-list")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self._last_reload = time.monotonic()
        self._load(self.span)

    def schedule_reload(self) -> None:
        """Live updates arrived: reload, at most every few seconds."""
        if time.monotonic() - self._last_reload >= RELOAD_EVERY_S:
            self.action_reload()

    def action_span(self) -> None:
        self.span = "day" if self.span == "hour" else "hour"
        self.action_reload()

    def action_metric(self) -> None:
        self.metric = METRICS[(METRICS.index(self.metric) + 1) % len(METRICS)]
        self._draw_chart()

    @work(thread=True, exclusive=True, group="health-load")
    def _load(self, span: str) -> None:
        registry, now = self.registry, self.clock()
        width, length = SPANS[span]
        health = self.settings.health
        try:
            records = registry.health_records(group=self.group)
            report = group_health_report(registry, group=self.group)
            series = {m: bucket_means(registry.metric_series(m, width, now - length, now,
                                                             group=self.group))
                      for m in METRICS}
            window = self.settings.automation.recent_alerts_s
            if self.group is not None:
                alerts_recent = recent_alert_counts(registry, window_s=window,
                                                    now=now).get(self.group, 0)
            else:  # the whole fleet: alerts of no group count too
                alerts_recent = sum(1 for a in list_alerts(registry, limit=10_000)
                                    if a.last_seen >= now - window)
            alerts_open = len(list_alerts(registry, status="open", group=self.group,
                                          limit=10_000))
        except RegistryError as err:
            self.post_message(self.Loaded(HealthData(), str(err)))
            return
        gone = [(device, seen) for device, _online, _health, seen, telemetry in records
                if telemetry and seen is not None
                and is_gone_dark(seen, now, health.telemetry_interval_s,
                                 health.gone_dark_intervals)]
        # Both methods may flag the same value; list it once, under its strongest score.
        strongest: dict[tuple[str, str], dict[str, Any]] = {}
        for a in sorted(report["anomalies"], key=lambda a: -abs(a["score"])):
            strongest.setdefault((a["device_id"], a["metric"]), a)
        anomalies = list(strongest.values())
        self.post_message(self.Loaded(HealthData(
            Counter(r[1] for r in records), Counter(r[2] for r in records), series,
            anomalies, sorted(gone, key=lambda g: g[1]), alerts_recent, alerts_open)))

    def on_health_screen_loaded(self, message: Loaded) -> None:
        counts = self.query_one("#health-counts", Static)
        if message.error:
            counts.update(Text(message.error, style="bold red"))
            return
        data = self.data = message.data
        self.counts = {"online": data.online[True], "offline": data.online[False]}
        self.counts |= {state or "no telemetry": data.health[state] for state in HEALTH_ORDER}
        self.counts["gone dark"] = len(data.gone_dark)
        self.counts["anomalies"] = len(data.anomalies)
        self.counts["alerts open"] = data.alerts_open
        self.counts["recent alerts"] = data.alerts_recent
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(justify="right")
        styles = {"unhealthy": "bold red", "degraded": "yellow", "gone dark": "bold red",
                  "alerts open": "bold red"}
        for label, count in self.counts.items():
            table.add_row(Text(label, style=styles.get(label, "")), str(count))
        counts.update(table)
        for metric in METRICS:
            values = data.series.get(metric, [])
            self.query_one(f"#hspark-{metric}", Sparkline).data = values
            last = f" {values[-1]:.0f}" if values else " -"
            self.query_one(f"#hlabel-{metric}", Static).update(f"{metric}{last}")
        self._fill_list(data)
        self._draw_chart()

    def _fill_list(self, data: HealthData) -> None:
        options = self.query_one("#health-list", OptionList)
        highlighted = options.highlighted
        options.clear_options()
        now = self.clock()
        items: list[Option] = []
        for a in data.anomalies:
            value = a["value"]
            shown = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
            items.append(Option(Text.assemble(
                ("⚑ ", "bold magenta"), f"{a['device_id']} ", (a["metric"], "bold"),
                f" {shown} ", (f"score {a['score']:.0f}", "dim")),
                id=f"a:{a['device_id']}:{a['metric']}"))
        for device, seen in data.gone_dark:
            items.append(Option(Text.assemble(("◌ gone dark ", "bold red"), device,
                                              (f" silent {int(now - seen)}s", "dim")),
                                id=f"g:{device}"))
        if not items:
            items.append(Option(Text("no anomalies, no device gone dark", style="dim"),
                                disabled=True))
        options.add_options(items)
        if highlighted is not None and highlighted < len(items):
            options.highlighted = highlighted

    def _draw_chart(self) -> None:
        chart = self.query_one(PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        values = self.data.series.get(self.metric, [])
        plt.title(f"{self.metric} · last {self.span}")
        if values:
            plt.plot(list(range(len(values))), values, marker="braille")
        plt.xticks([])
        chart.refresh()

    @on(OptionList.OptionSelected, "#health-list")
    def _open(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        kind, _, rest = option_id.partition(":")
        device = rest.split(":")[0] if kind in ("a", "g") else ""
        if device:
            open_device = getattr(self.app, "open_device", None)
            if open_device is not None:
                open_device(device)
