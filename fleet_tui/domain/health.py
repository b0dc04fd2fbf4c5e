"""Device and group health: telemetry validation, classification, presence, reboot loops,
time buckets for sparklines, group aggregates, anomaly scores and cohort comparison.

Pure logic with no I/O. The service feeds it parsed ``fleet/{thing}/telemetry`` payloads and
stores what it returns; the console and the rollout gates read the results.

``classify`` runs once per telemetry message (thousands per second), so it avoids
allocation on the healthy path and does no lookups by name.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

# Numeric telemetry fields, in payload order. ``errors`` is the number of errors the device
# counted since its previous telemetry message (per interval), not a lifetime counter.
METRICS: tuple[str, ...] = ("uptime_s", "heap_free", "rssi", "cpu_pct", "temp_c", "errors")
# The metrics that have thresholds, and the default set checked for anomalies.
CLASSIFIED_METRICS: tuple[str, ...] = ("heap_free", "rssi", "cpu_pct", "temp_c", "errors")

# Telemetry integers are stored in SQL BIGINT columns; anything larger is malformed.
_INT64_MAX = 2**63 - 1
MAX_RESET_REASON_LEN = 64


# --------------------------------------------------------------------------- telemetry


class TelemetryError(ValueError):
    """A telemetry payload is malformed; ``field`` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[type[TelemetryError], tuple[str, str]]:
        # Keeps the error picklable (it may cross to a worker process) despite the 2-arg init.
        return (type(self), (self.field, self.problem))


def _int_field(d: Mapping[str, Any], name: str) -> int:
    if name not in d:
        raise TelemetryError(name, "missing")
    v = d[name]
    # bool is a subclass of int, but `true` is not a heap size.
    if isinstance(v, bool):
        raise TelemetryError(name, f"expected an integer, got {type(v).__name__}")
    if isinstance(v, int):
        if not -_INT64_MAX - 1 <= v <= _INT64_MAX:
            raise TelemetryError(name, "out of 64-bit range")
        return v
    # JSON has one number type and some encoders write 12000 as 12000.0; accept those.
    if isinstance(v, float):
        if not math.isfinite(v):
            raise TelemetryError(name, f"not a finite number ({v})")
        if v.is_integer() and -(2.0**63) <= v < 2.0**63:
            return int(v)
        raise TelemetryError(name, f"expected an integer, got {v}")
    raise TelemetryError(name, f"expected an integer, got {type(v).__name__}")


def _float_field(d: Mapping[str, Any], name: str) -> float:
    if name not in d:
        raise TelemetryError(name, "missing")
    v = d[name]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TelemetryError(name, f"expected a number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:  # an int too large for a double
        raise TelemetryError(name, "number out of range") from None
    if not math.isfinite(f):
        raise TelemetryError(name, f"not a finite number ({v})")
    return f


def _non_negative(name: str, v: float) -> None:
    if v < 0:
        raise TelemetryError(name, f"must not be negative, got {v}")


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One telemetry sample from a device (``fleet/{thing}/telemetry``)."""

    ts: float
    uptime_s: int
    heap_free: int
    rssi: int
    cpu_pct: float
    temp_c: float
    reset_reason: str
    errors: int

    @classmethod
    def from_payload(cls, d: Mapping[str, Any]) -> Telemetry:
        """Validate a decoded JSON payload; raise :class:`TelemetryError` naming the field.

        Unknown keys are ignored so newer firmware can add fields. Booleans are not numbers,
        NaN and infinities are rejected, counters (uptime, heap, errors), ``cpu_pct`` and
        ``ts`` must not be negative.
        """
        if not isinstance(d, Mapping):
            raise TelemetryError("payload", f"expected a JSON object, got {type(d).__name__}")
        ts = _float_field(d, "ts")
        _non_negative("ts", ts)
        uptime_s = _int_field(d, "uptime_s")
        _non_negative("uptime_s", uptime_s)
        heap_free = _int_field(d, "heap_free")
        _non_negative("heap_free", heap_free)
        rssi = _int_field(d, "rssi")
        cpu_pct = _float_field(d, "cpu_pct")
        _non_negative("cpu_pct", cpu_pct)
        temp_c = _float_field(d, "temp_c")
        if "reset_reason" not in d:
            raise TelemetryError("reset_reason", "missing")
        reset_reason = d["reset_reason"]
        if not isinstance(reset_reason, str):
            raise TelemetryError(
                "reset_reason", f"expected a string, got {type(reset_reason).__name__}"
            )
        if len(reset_reason) > MAX_RESET_REASON_LEN:
            raise TelemetryError("reset_reason", f"longer than {MAX_RESET_REASON_LEN} chars")
        errors = _int_field(d, "errors")
        _non_negative("errors", errors)
        return cls(ts, uptime_s, heap_free, rssi, cpu_pct, temp_c, reset_reason, errors)


# ------------------------------------------------------------------------ classification


class HealthState(StrEnum):
    """Per-device health from the latest telemetry; ordered by :attr:`rank`."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        """0 healthy, 1 degraded, 2 unhealthy: larger is worse."""
        return _RANK[self]


_RANK = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}
_BY_RANK = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY)


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Degraded and unhealthy bounds per metric (strict comparisons: at the bound is fine).

    Low-is-bad metrics (``heap_free`` bytes, ``rssi`` dBm) are degraded *below* their bound;
    high-is-bad ones (``cpu_pct``, ``temp_c`` °C, ``errors`` per telemetry interval) are
    degraded *above* it. Defaults suit an ESP32 (~300 KB heap after Wi-Fi, throttling well
    before the 105 °C die limit, Wi-Fi unusable below about -90 dBm).
    """

    heap_free_degraded: int = 40_000
    heap_free_unhealthy: int = 15_000
    rssi_degraded: int = -80
    rssi_unhealthy: int = -90
    cpu_pct_degraded: float = 85.0
    cpu_pct_unhealthy: float = 95.0
    temp_c_degraded: float = 70.0
    temp_c_unhealthy: float = 85.0
    errors_degraded: int = 5
    errors_unhealthy: int = 20

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"health threshold {f.name} must be a finite number, got {v!r}")
        # An unhealthy bound milder than the degraded one would make "unhealthy" unreachable
        # past "degraded" and break the monotone ordering the console relies on.
        for name in ("heap_free", "rssi"):
            deg, unh = getattr(self, f"{name}_degraded"), getattr(self, f"{name}_unhealthy")
            if unh > deg:
                raise ValueError(f"{name}_unhealthy ({unh}) must be <= {name}_degraded ({deg})")
        for name in ("cpu_pct", "temp_c", "errors"):
            deg, unh = getattr(self, f"{name}_degraded"), getattr(self, f"{name}_unhealthy")
            if unh < deg:
                raise ValueError(f"{name}_unhealthy ({unh}) must be >= {name}_degraded ({deg})")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> HealthThresholds:
        """Build from a settings table (keys are the field names; missing keys keep defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown health threshold(s): {', '.join(unknown)}")
        return cls(**d)


DEFAULT_THRESHOLDS = HealthThresholds()


def _fmt(v: float) -> str:
    # 85.0 reads as "85"; 10 significant digits keep 95.00001 distinct from its bound 95.
    if isinstance(v, int) or v.is_integer():
        return str(int(v))
    return f"{v:.10g}"


def _below(name: str, v: float, degraded: float, unhealthy: float, reasons: list[str]) -> int:
    if v >= degraded:
        return 0
    if v < unhealthy:
        reasons.append(f"{name} {_fmt(v)} < {_fmt(unhealthy)}")
        return 2
    reasons.append(f"{name} {_fmt(v)} < {_fmt(degraded)}")
    return 1


def _above(name: str, v: float, degraded: float, unhealthy: float, reasons: list[str]) -> int:
    if v <= degraded:
        return 0
    if v > unhealthy:
        reasons.append(f"{name} {_fmt(v)} > {_fmt(unhealthy)}")
        return 2
    reasons.append(f"{name} {_fmt(v)} > {_fmt(degraded)}")
    return 1


def classify(
    t: Telemetry, th: HealthThresholds = DEFAULT_THRESHOLDS
) -> tuple[HealthState, list[str]]:
    """The worst state over all metrics, with one reason per metric out of bounds.

    Reasons name the bound that was crossed, e.g. ``"heap_free 12000 < 15000"``; the list is
    empty exactly when the state is healthy.
    """
    reasons: list[str] = []
    rank = max(
        _below("heap_free", t.heap_free, th.heap_free_degraded, th.heap_free_unhealthy, reasons),
        _below("rssi", t.rssi, th.rssi_degraded, th.rssi_unhealthy, reasons),
        _above("cpu_pct", t.cpu_pct, th.cpu_pct_degraded, th.cpu_pct_unhealthy, reasons),
        _above("temp_c", t.temp_c, th.temp_c_degraded, th.temp_c_unhealthy, reasons),
        _above("errors", t.errors, th.errors_degraded, th.errors_unhealthy, reasons),
    )
    return _BY_RANK[rank], reasons


# ------------------------------------------------------------------------------ presence


def is_gone_dark(
    last_seen: float, now: float, telemetry_interval_s: float, missed: int = 3
) -> bool:
    """True when nothing has arrived for more than ``missed`` telemetry intervals.

    Strictly more: a message due exactly at the deadline is allowed its network latency. A
    device that is gone dark counts as offline even if its retained presence says online
    (a half-open TCP connection can keep the broker from firing the last will for minutes).
    """
    if not telemetry_interval_s > 0:
        raise ValueError(f"telemetry_interval_s must be positive, got {telemetry_interval_s}")
    if missed < 1:
        raise ValueError(f"missed must be >= 1, got {missed}")
    return now - last_seen > missed * telemetry_interval_s


def is_online(
    presence_online: bool,
    last_seen: float | None,
    now: float,
    telemetry_interval_s: float,
    missed: int = 3,
) -> bool:
    """Online = the presence topic says online and the device has not gone dark."""
    if not presence_online or last_seen is None:
        return False
    return not is_gone_dark(last_seen, now, telemetry_interval_s, missed)


# --------------------------------------------------------------------------- reboot loops

DEFAULT_REBOOT_WINDOW_S = 600.0
DEFAULT_REBOOT_LOOP_RESETS = 3


def reset_times(samples: Sequence[tuple[float, int]]) -> list[float]:
    """Timestamps of the samples whose ``uptime_s`` is lower than the previous sample's.

    ``samples`` are ``(ts, uptime_s)`` in arrival order. They are deliberately not sorted by
    ``ts``: a device without a real-time clock may report a small ``ts`` right after a reboot,
    and sorting would hide exactly that reset. Callers that distrust device clocks should pass
    the service's receive time as ``ts``.
    """
    out: list[float] = []
    prev: int | None = None
    for ts, uptime in samples:
        if prev is not None and uptime < prev:
            out.append(ts)
        prev = uptime
    return out


def count_resets(samples: Sequence[tuple[float, int]]) -> int:
    """How many uptime resets (``uptime_s`` decreased) ``samples`` contain."""
    return len(reset_times(samples))


def is_reboot_loop(
    samples: Sequence[tuple[float, int]],
    now: float | None = None,
    window_s: float = DEFAULT_REBOOT_WINDOW_S,
    min_resets: int = DEFAULT_REBOOT_LOOP_RESETS,
) -> bool:
    """True when at least ``min_resets`` resets happened in the ``window_s`` before ``now``.

    ``now`` defaults to the latest sample time.
    """
    if not samples:
        return False
    if now is None:
        now = max(ts for ts, _ in samples)
    horizon = now - window_s
    return sum(1 for ts in reset_times(samples) if ts >= horizon) >= min_resets


class RebootLoopDetector:
    """Incremental, per-device form of :func:`is_reboot_loop` for the ingest path.

    Keeps only the previous uptime and the reset times inside the window, so it costs O(1)
    memory per device whatever the sample rate.
    """

    __slots__ = ("_last_uptime", "_resets", "min_resets", "window_s")

    def __init__(
        self,
        window_s: float = DEFAULT_REBOOT_WINDOW_S,
        min_resets: int = DEFAULT_REBOOT_LOOP_RESETS,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if min_resets < 1:
            raise ValueError(f"min_resets must be >= 1, got {min_resets}")
        self.window_s = window_s
        self.min_resets = min_resets
        self._last_uptime: int | None = None
        self._resets: deque[float] = deque()

    def observe(self, ts: float, uptime_s: int, *, planned: bool = False) -> bool:
        """Feed the next sample (arrival order); True when it shows a reset. A ``planned``
        reset (the device says it restarted on purpose: an OTA apply, a reboot command)
        is not counted towards a loop: three updates in ten minutes are not a crash loop."""
        reset = self._last_uptime is not None and uptime_s < self._last_uptime
        self._last_uptime = uptime_s
        if reset and not planned:
            self._resets.append(ts)
        self._prune(ts)
        return reset

    def resets_in_window(self, now: float) -> int:
        """Resets seen within ``window_s`` before ``now``."""
        self._prune(now)
        return len(self._resets)

    def in_loop(self, now: float) -> bool:
        """True when the device has reset ``min_resets`` times within the window."""
        return self.resets_in_window(now) >= self.min_resets

    def in_loop_since(self, now: float, since: float) -> bool:
        """As :meth:`in_loop`, counting only the resets at or after ``since`` (a rollout
        wave's start: a crash loop on the release before is not this release's)."""
        self._prune(now)
        return sum(1 for t in self._resets if t >= since) >= self.min_resets

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        resets = self._resets
        while resets and resets[0] < horizon:
            resets.popleft()


# --------------------------------------------------------------------------- time buckets


def bucket_start(ts: float, width_s: int) -> int:
    """Start of the ``width_s``-wide bucket holding ``ts`` (aligned to the Unix epoch)."""
    if width_s <= 0:
        raise ValueError(f"bucket width must be positive, got {width_s}")
    # Floor division, not int(): -0.5 belongs to the bucket starting at -width_s.
    return int(ts // width_s) * width_s


@dataclass(slots=True)
class Bucket:
    """Running count/sum/min/max/last of one metric over one time bucket.

    An empty bucket has ``min = +inf`` and ``max = -inf`` (the identities of min and max) so
    that merging needs no special case. ``last`` is the most recently added value; in
    :meth:`merge` the other bucket counts as the more recent one.
    """

    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    last: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Bucket:
        """A bucket holding ``values``, added in order."""
        b = cls()
        for v in values:
            b.add(v)
        return b

    def add(self, value: float) -> None:
        """Account one (finite) sample."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.last = value

    def merge(self, other: Bucket) -> Bucket:
        """Fold ``other`` (the later bucket) into this one; returns ``self``."""
        if other.count:
            self.count += other.count
            self.sum += other.sum
            if other.min < self.min:
                self.min = other.min
            if other.max > self.max:
                self.max = other.max
            self.last = other.last
        return self

    @property
    def mean(self) -> float | None:
        """Mean of the samples, or None when the bucket is empty."""
        return self.sum / self.count if self.count else None


BucketStat = Literal["mean", "min", "max", "last", "sum", "count"]


def _stat(b: Bucket, stat: BucketStat) -> float | None:
    if not b.count:
        return None
    if stat == "mean":
        return b.sum / b.count
    if stat == "last":
        return b.last
    if stat in ("min", "max", "sum", "count"):
        return float(getattr(b, stat))
    raise ValueError(f"unknown bucket statistic {stat!r}")


def bucket_starts(start: float, end: float, width_s: int) -> range:
    """Starts of the buckets overlapping ``[start, end)``, oldest first."""
    first = bucket_start(start, width_s)
    # Bucket starts are integers, so ``b < end`` is the same as ``b < ceil(end)``.
    return range(first, math.ceil(end), width_s)


def series(
    buckets: Mapping[int, Bucket],
    start: float,
    end: float,
    width_s: int,
    stat: BucketStat = "mean",
) -> list[float | None]:
    """One value per bucket overlapping ``[start, end)``, None where there is no data.

    ``buckets`` maps bucket start to bucket. The gaps stay None (not 0) so a sparkline can
    show "no data" rather than a false dip.
    """
    if stat not in ("mean", "min", "max", "last", "sum", "count"):
        raise ValueError(f"unknown bucket statistic {stat!r}")
    out: list[float | None] = []
    for s in bucket_starts(start, end, width_s):
        b = buckets.get(s)
        out.append(None if b is None else _stat(b, stat))
    return out


def rollup(buckets: Mapping[int, Bucket], width_s: int) -> dict[int, Bucket]:
    """Re-bucket into wider buckets (``width_s`` a multiple of the source width).

    Used to fit a day of 1-minute buckets into a narrow sparkline, or to build 1-hour
    buckets from 1-minute ones. Inputs are merged oldest first so ``last`` stays right.
    """
    out: dict[int, Bucket] = {}
    for s in sorted(buckets):
        key = bucket_start(s, width_s)
        target = out.get(key)
        if target is None:
            target = out[key] = Bucket()
        target.merge(buckets[s])
    return out


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long buckets of each width are kept: ``(width_s, keep_s)`` per tier."""

    tiers: tuple[tuple[int, float], ...] = ((60, 24 * 3600), (3600, 30 * 24 * 3600))

    def __post_init__(self) -> None:
        widths = [w for w, _ in self.tiers]
        if len(set(widths)) != len(widths):
            raise ValueError("retention tiers must have distinct widths")
        for width, keep in self.tiers:
            if width <= 0 or keep <= 0:
                raise ValueError(f"retention tier ({width}, {keep}) must be positive")

    @property
    def widths(self) -> tuple[int, ...]:
        """The bucket widths the service maintains."""
        return tuple(w for w, _ in self.tiers)

    def keep_s(self, width_s: int) -> float:
        """How long buckets of ``width_s`` are kept."""
        for width, keep in self.tiers:
            if width == width_s:
                return keep
        raise ValueError(f"no retention tier for {width_s}-second buckets")


DEFAULT_RETENTION = RetentionPolicy()


def expiry_cutoff(width_s: int, now: float, policy: RetentionPolicy = DEFAULT_RETENTION) -> float:
    """Buckets of ``width_s`` whose start is ``<=`` this are expired (for a bulk DELETE)."""
    return now - policy.keep_s(width_s) - width_s


def expired(
    bucket_start: float, width_s: int, now: float, policy: RetentionPolicy = DEFAULT_RETENTION
) -> bool:
    """True once the whole bucket lies before the retention horizon.

    A bucket straddling the horizon is kept, so "the last 24 h" is always fully covered.
    """
    return bucket_start <= expiry_cutoff(width_s, now, policy)


# ------------------------------------------------------------------------------- groups


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """The latest known health of one device, as input to group summaries."""

    device_id: str
    online: bool
    state: HealthState | None = None
    telemetry: Telemetry | None = None


@dataclass(frozen=True, slots=True)
class GroupHealth:
    """Counts and averages over a group's devices.

    Health counts cover online devices only (an offline device's last state is stale), so
    ``healthy + degraded + unhealthy + unknown == online``; ``unknown`` is online without a
    classified sample yet. ``means`` has every name in :data:`METRICS`, averaged over online
    devices with telemetry, None when there are none.
    """

    total: int
    online: int
    offline: int
    healthy: int
    degraded: int
    unhealthy: int
    unknown: int
    means: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_devices(cls, devices: Iterable[DeviceHealth]) -> GroupHealth:
        """Summarise the latest records of a group's devices."""
        total = online = 0
        by_state = dict.fromkeys(HealthState, 0)
        unknown = 0
        samples: list[Telemetry] = []
        for d in devices:
            total += 1
            if not d.online:
                continue
            online += 1
            if d.state is None:
                unknown += 1
            else:
                by_state[d.state] += 1
            if d.telemetry is not None:
                samples.append(d.telemetry)
        means: dict[str, float | None] = {
            m: (math.fsum(getattr(t, m) for t in samples) / len(samples) if samples else None)
            for m in METRICS
        }
        return cls(
            total=total,
            online=online,
            offline=total - online,
            healthy=by_state[HealthState.HEALTHY],
            degraded=by_state[HealthState.DEGRADED],
            unhealthy=by_state[HealthState.UNHEALTHY],
            unknown=unknown,
            means=means,
        )


# ------------------------------------------------------------------------------ anomalies

# Below this many devices a group has no meaningful "normal" to deviate from. With MAD's
# mean-absolute-deviation fallback a lone outlier among n equal values scores n/1.2533, which
# passes 3.5 only from n = 5 on.
DEFAULT_MIN_SAMPLES = 5
# Scale factors that make each score comparable to a standard normal z-score.
_MAD_SCALE = 0.6745  # Phi^-1(0.75): MAD of a normal is 0.6745 sigma
_MEANAD_SCALE = 1.253314  # sqrt(pi/2): mean absolute deviation of a normal is 0.7979 sigma
_FLOAT_MAX = sys.float_info.max

AnomalyMethod = Literal["zscore", "mad"]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A device whose value is an outlier against its group (``score`` is signed)."""

    device_id: str
    metric: str
    value: float
    score: float
    method: AnomalyMethod


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    # Non-finite values cannot be scored and would poison the mean; they are left out.
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def _zscore(xs: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    n = len(xs)
    if n < 2:
        return (next(iter(xs.values())) if xs else 0.0), dict.fromkeys(xs, 0.0)
    mean = math.fsum(xs.values()) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs.values()) / (n - 1))
    if sd == 0:
        return mean, dict.fromkeys(xs, 0.0)
    return mean, {k: (x - mean) / sd for k, x in xs.items()}


def _modified_zscore(xs: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    if not xs:
        return 0.0, {}
    med = statistics.median(xs.values())
    dev = [abs(x - med) for x in xs.values()]
    mad = statistics.median(dev)
    if mad > 0:
        return med, {k: _MAD_SCALE * ((x - med) / mad) for k, x in xs.items()}
    mean_ad = math.fsum(dev) / len(dev)
    if mean_ad == 0:
        return med, dict.fromkeys(xs, 0.0)
    denom = _MEANAD_SCALE * mean_ad
    return med, {k: (x - med) / denom for k, x in xs.items()}


def zscore_scores(values: Mapping[str, float]) -> dict[str, float]:
    """Classic z-score ``(x - mean) / sd`` per key, sample standard deviation.

    Scores are 0 when there are fewer than two values or all are equal. Note that with the
    sample SD no score can exceed ``(n - 1) / sqrt(n)`` in absolute value, so a z-score
    threshold of 3 cannot fire in groups of 10 or fewer: the outlier inflates the SD that
    is meant to expose it. Use :func:`mad_scores` for small groups.
    """
    return _zscore(_finite(values))[1]


def mad_scores(values: Mapping[str, float]) -> dict[str, float]:
    """Robust modified z-score ``0.6745 * (x - median) / MAD`` per key (Iglewicz & Hoaglin).

    The median and MAD ignore a minority of outliers, so an outlier cannot mask itself.
    When more than half the values are equal MAD is 0; then the mean absolute deviation
    from the median, times 1.253314, stands in for the SD. All-equal values score 0.
    A spread that underflows (subnormal MAD) can give infinite scores.
    """
    return _modified_zscore(_finite(values))[1]


def _outliers(
    xs: Mapping[str, float],
    center: float,
    scores: Mapping[str, float],
    threshold: float,
    metric: str,
    method: AnomalyMethod,
    min_samples: int,
) -> list[Anomaly]:
    if len(xs) < min_samples:
        return []
    found = [
        # Clamped so an overflowed score still serialises as a JSON number.
        Anomaly(k, metric, xs[k], max(-_FLOAT_MAX, min(_FLOAT_MAX, s)), method)
        for k, s in scores.items()
        if abs(s) > threshold
    ]
    # Worst first. The distance from the center orders exactly as |score| does (the scale is
    # common to all) and stays distinct where scores overflow to the same infinity.
    found.sort(key=lambda a: (-abs(a.value - center), a.device_id))
    return found


def zscore_outliers(
    values: Mapping[str, float],
    threshold: float = 3.0,
    *,
    metric: str = "",
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> list[Anomaly]:
    """Devices with ``|z| > threshold``, worst first; none below ``min_samples`` values."""
    xs = _finite(values)
    mean, scores = _zscore(xs)
    return _outliers(xs, mean, scores, threshold, metric, "zscore", min_samples)


def mad_outliers(
    values: Mapping[str, float],
    threshold: float = 3.5,
    *,
    metric: str = "",
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> list[Anomaly]:
    """Devices with ``|modified z| > threshold`` (3.5 as Iglewicz & Hoaglin recommend)."""
    xs = _finite(values)
    med, scores = _modified_zscore(xs)
    return _outliers(xs, med, scores, threshold, metric, "mad", min_samples)


def group_anomalies(
    devices: Iterable[DeviceHealth],
    metrics: Sequence[str] = CLASSIFIED_METRICS,
    method: AnomalyMethod = "mad",
    threshold: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> list[Anomaly]:
    """Outliers of each metric among a group's online devices' latest telemetry.

    ``threshold`` defaults to the method's own (3.0 for z-score, 3.5 for MAD).
    """
    latest = {d.device_id: d.telemetry for d in devices if d.online and d.telemetry}
    out: list[Anomaly] = []
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}")
        values = {k: float(getattr(t, m)) for k, t in latest.items()}
        if method == "mad":
            out += mad_outliers(
                values, 3.5 if threshold is None else threshold, metric=m, min_samples=min_samples
            )
        elif method == "zscore":
            out += zscore_outliers(
                values, 3.0 if threshold is None else threshold, metric=m, min_samples=min_samples
            )
        else:
            raise ValueError(f"unknown anomaly method {method!r}")
    return out


# ------------------------------------------------------------------------------ cohorts


@dataclass(frozen=True, slots=True)
class CohortComparison:
    """The updated cohort against the baseline (not-yet-updated) one.

    For rates pass one 0/1 (or bool) per device: the mean is then the rate. ``ratio`` is
    1.0 when both means are 0 and ``inf`` when only the baseline's is, so a gate of the form
    ``ratio <= limit`` behaves.
    """

    updated_mean: float
    baseline_mean: float
    difference: float
    ratio: float
    updated_n: int
    baseline_n: int


def compare_cohorts(updated: Sequence[float], baseline: Sequence[float]) -> CohortComparison:
    """Compare the mean of a per-device value (offline, reboot loop, ...) across cohorts."""
    if not updated:
        raise ValueError("updated cohort is empty")
    if not baseline:
        raise ValueError("baseline cohort is empty")
    u = math.fsum(updated) / len(updated)
    b = math.fsum(baseline) / len(baseline)
    ratio = u / b if b != 0 else (1.0 if u == 0 else math.copysign(math.inf, u))
    return CohortComparison(u, b, u - b, ratio, len(updated), len(baseline))
