"""Health analytics: telemetry validation, classification, presence, reboot loops, buckets,
group aggregates, anomalies and cohort comparison."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fleet_tui.domain.health import (
    DEFAULT_RETENTION,
    DEFAULT_THRESHOLDS,
    Anomaly,
    Bucket,
    DeviceHealth,
    GroupHealth,
    HealthState,
    HealthThresholds,
    RebootLoopDetector,
    RetentionPolicy,
    Telemetry,
    TelemetryError,
    bucket_start,
    bucket_starts,
    classify,
    compare_cohorts,
    count_resets,
    expired,
    expiry_cutoff,
    group_anomalies,
    is_gone_dark,
    is_online,
    is_reboot_loop,
    mad_outliers,
    mad_scores,
    reset_times,
    rollup,
    series,
    zscore_outliers,
    zscore_scores,
)

GOOD = {
    "ts": 1_700_000_000.5,
    "uptime_s": 3600,
    "heap_free": 180_000,
    "rssi": -60,
    "cpu_pct": 20.0,
    "temp_c": 45.0,
    "reset_reason": "poweron",
    "errors": 0,
}


def telemetry(**overrides: object) -> Telemetry:
    return Telemetry.from_payload({**GOOD, **overrides})


# ------------------------------------------------------------------ telemetry parsing


def test_valid_payload_parses_to_typed_fields() -> None:
    t = Telemetry.from_payload(GOOD)
    assert t == Telemetry(1_700_000_000.5, 3600, 180_000, -60, 20.0, 45.0, "poweron", 0)


def test_integer_ts_and_temperature_become_floats_and_unknown_keys_are_ignored() -> None:
    t = Telemetry.from_payload({**GOOD, "ts": 5, "temp_c": 40, "fw": "2.0.0"})
    assert isinstance(t.ts, float)
    assert isinstance(t.temp_c, float)


def test_integral_float_is_accepted_for_integer_field() -> None:
    assert telemetry(heap_free=12000.0).heap_free == 12000
    assert isinstance(telemetry(heap_free=12000.0).heap_free, int)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_missing_field_is_named_in_the_error(name: str) -> None:
    payload = {k: v for k, v in GOOD.items() if k != name}
    with pytest.raises(TelemetryError, match=name) as exc:
        Telemetry.from_payload(payload)
    assert exc.value.field == name
    assert "missing" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("heap_free", True),
        ("errors", False),
        ("cpu_pct", True),
        ("ts", True),
        ("heap_free", "12000"),
        ("rssi", None),
        ("rssi", -60.5),
        ("uptime_s", [1]),
        ("temp_c", float("nan")),
        ("temp_c", float("inf")),
        ("cpu_pct", float("-inf")),
        ("heap_free", float("nan")),
        ("reset_reason", 3),
        ("reset_reason", None),
        ("reset_reason", "x" * 65),
        ("uptime_s", -1),
        ("heap_free", -5),
        ("errors", -1),
        ("cpu_pct", -0.5),
        ("ts", -1.0),
        ("heap_free", 2**63),
        ("temp_c", 10**400),
    ],
)
def test_wrong_typed_or_invalid_field_is_rejected_with_its_name(name: str, value: object) -> None:
    with pytest.raises(TelemetryError) as exc:
        telemetry(**{name: value})
    assert exc.value.field == name
    assert str(exc.value).startswith(f"{name}: ")


@pytest.mark.parametrize("payload", [None, [], "x", 3, [("ts", 1)]])
def test_non_object_payload_is_rejected(payload: object) -> None:
    with pytest.raises(TelemetryError) as exc:
        Telemetry.from_payload(payload)  # type: ignore[arg-type]
    assert exc.value.field == "payload"


def test_telemetry_error_is_a_value_error_and_pickles() -> None:
    err = TelemetryError("rssi", "missing")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.field, back.problem, str(back)) == ("rssi", "missing", "rssi: missing")


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from([*GOOD, "extra"]) | st.text(max_size=8), json_values, max_size=10
    )
)
def test_arbitrary_json_objects_either_parse_or_raise_telemetry_error(d: dict) -> None:
    try:
        t = Telemetry.from_payload(d)
    except TelemetryError as e:
        assert e.field in (*GOOD, "payload")
    else:
        assert all(math.isfinite(getattr(t, f)) for f in ("ts", "cpu_pct", "temp_c"))


@given(st.sampled_from(sorted(GOOD)), json_values)
def test_replacing_one_field_with_junk_never_raises_anything_but_telemetry_error(
    name: str, junk: object
) -> None:
    try:
        telemetry(**{name: junk})
    except TelemetryError as e:
        assert e.field == name


# --------------------------------------------------------------------- classification


def test_nominal_telemetry_is_healthy_with_no_reasons() -> None:
    assert classify(telemetry()) == (HealthState.HEALTHY, [])


def test_health_state_values_are_plain_strings() -> None:
    assert [s.value for s in HealthState] == ["healthy", "degraded", "unhealthy"]
    assert HealthState("degraded") is HealthState.DEGRADED
    assert HealthState.UNHEALTHY == "unhealthy"
    assert [s.rank for s in HealthState] == [0, 1, 2]


@pytest.mark.parametrize(
    ("overrides", "state", "reason"),
    [
        ({"heap_free": 12000}, HealthState.UNHEALTHY, "heap_free 12000 < 15000"),
        ({"heap_free": 30000}, HealthState.DEGRADED, "heap_free 30000 < 40000"),
        ({"heap_free": 40000}, HealthState.HEALTHY, None),
        ({"rssi": -85}, HealthState.DEGRADED, "rssi -85 < -80"),
        ({"rssi": -95}, HealthState.UNHEALTHY, "rssi -95 < -90"),
        ({"rssi": -80}, HealthState.HEALTHY, None),
        ({"cpu_pct": 90.5}, HealthState.DEGRADED, "cpu_pct 90.5 > 85"),
        ({"cpu_pct": 99.0}, HealthState.UNHEALTHY, "cpu_pct 99 > 95"),
        ({"cpu_pct": 95.00001}, HealthState.UNHEALTHY, "cpu_pct 95.00001 > 95"),
        ({"cpu_pct": 85.0}, HealthState.HEALTHY, None),
        ({"temp_c": 71.25}, HealthState.DEGRADED, "temp_c 71.25 > 70"),
        ({"temp_c": 90}, HealthState.UNHEALTHY, "temp_c 90 > 85"),
        ({"errors": 6}, HealthState.DEGRADED, "errors 6 > 5"),
        ({"errors": 21}, HealthState.UNHEALTHY, "errors 21 > 20"),
        ({"errors": 5}, HealthState.HEALTHY, None),
    ],
)
def test_each_metric_classifies_against_its_bounds(
    overrides: dict, state: HealthState, reason: str | None
) -> None:
    assert classify(telemetry(**overrides)) == (state, [reason] if reason else [])


def test_worst_metric_wins_and_every_breach_is_a_reason() -> None:
    state, reasons = classify(telemetry(heap_free=30000, temp_c=90.0, errors=7))
    assert state is HealthState.UNHEALTHY
    assert reasons == ["heap_free 30000 < 40000", "temp_c 90 > 85", "errors 7 > 5"]


def test_custom_thresholds_change_the_verdict() -> None:
    th = HealthThresholds(temp_c_degraded=40.0, temp_c_unhealthy=50.0)
    assert classify(telemetry(temp_c=45.0), th) == (HealthState.DEGRADED, ["temp_c 45 > 40"])


def test_thresholds_from_settings_mapping() -> None:
    th = HealthThresholds.from_mapping({"rssi_degraded": -70, "rssi_unhealthy": -75})
    assert (th.rssi_degraded, th.rssi_unhealthy, th.heap_free_degraded) == (-70, -75, 40000)
    with pytest.raises(ValueError, match="rssi_bad"):
        HealthThresholds.from_mapping({"rssi_bad": -70})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heap_free_unhealthy": 50_000},  # milder than degraded 40000
        {"rssi_unhealthy": -70},
        {"cpu_pct_unhealthy": 80.0},
        {"errors_degraded": 30},
        {"temp_c_degraded": float("nan")},
        {"errors_unhealthy": True},
        {"cpu_pct_degraded": "85"},
    ],
)
def test_inconsistent_or_non_numeric_thresholds_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HealthThresholds(**kwargs)


telemetries = st.builds(
    Telemetry,
    ts=st.floats(0, 2e9),
    uptime_s=st.integers(0, 10**8),
    heap_free=st.integers(0, 400_000),
    rssi=st.integers(-127, 0),
    cpu_pct=st.floats(0, 100),
    temp_c=st.floats(-40, 125),
    reset_reason=st.sampled_from(["poweron", "panic", "brownout", "sw"]),
    errors=st.integers(0, 100),
)


@st.composite
def thresholds(draw: st.DrawFn) -> HealthThresholds:
    def low(lo: int, hi: int) -> tuple[int, int]:
        a, b = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
        return max(a, b), min(a, b)  # degraded, unhealthy

    def high(lo: float, hi: float) -> tuple[float, float]:
        a, b = draw(st.floats(lo, hi)), draw(st.floats(lo, hi))
        return min(a, b), max(a, b)

    hd, hu = low(0, 400_000)
    rd, ru = low(-127, 0)
    cd, cu = high(0, 100)
    td, tu = high(-40, 125)
    ed, eu = high(0, 100)
    return HealthThresholds(hd, hu, rd, ru, cd, cu, td, tu, int(ed), int(eu))


@given(
    telemetries,
    thresholds(),
    st.sampled_from(["heap_free", "rssi", "cpu_pct", "temp_c", "errors"]),
    st.integers(0, 500_000),
)
def test_worsening_a_metric_never_improves_the_state(
    t: Telemetry, th: HealthThresholds, metric: str, amount: int
) -> None:
    value = getattr(t, metric)
    worse = value - amount if metric in ("heap_free", "rssi") else value + amount
    state, reasons = classify(t, th)
    worse_state, worse_reasons = classify(replace(t, **{metric: worse}), th)
    assert worse_state.rank >= state.rank
    assert len(worse_reasons) >= len(reasons)


@given(telemetries, thresholds())
def test_reasons_are_empty_exactly_when_healthy(t: Telemetry, th: HealthThresholds) -> None:
    state, reasons = classify(t, th)
    assert (state is HealthState.HEALTHY) == (not reasons)


# --------------------------------------------------------------------------- presence


def test_device_goes_dark_after_more_than_three_intervals_of_silence() -> None:
    assert not is_gone_dark(last_seen=1000.0, now=1030.0, telemetry_interval_s=10)
    assert is_gone_dark(last_seen=1000.0, now=1030.1, telemetry_interval_s=10)
    assert is_gone_dark(last_seen=1000.0, now=1011.0, telemetry_interval_s=10, missed=1)


@pytest.mark.parametrize(("interval", "missed"), [(0, 3), (-1, 3), (10, 0)])
def test_gone_dark_rejects_nonsense_parameters(interval: float, missed: int) -> None:
    with pytest.raises(ValueError):
        is_gone_dark(0.0, 1.0, interval, missed)


def test_online_needs_presence_and_recent_telemetry() -> None:
    assert is_online(True, last_seen=100.0, now=110.0, telemetry_interval_s=10)
    assert not is_online(False, last_seen=100.0, now=110.0, telemetry_interval_s=10)
    assert not is_online(True, last_seen=None, now=110.0, telemetry_interval_s=10)
    assert not is_online(True, last_seen=100.0, now=200.0, telemetry_interval_s=10)


# ------------------------------------------------------------------------ reboot loops


def test_uptime_decrease_counts_as_a_reset() -> None:
    samples = [(0.0, 100), (10.0, 110), (20.0, 3), (30.0, 13), (40.0, 2), (50.0, 12)]
    assert reset_times(samples) == [20.0, 40.0]
    assert count_resets(samples) == 2
    assert count_resets([]) == 0
    assert count_resets([(0.0, 5)]) == 0


def test_equal_uptime_is_not_a_reset() -> None:
    assert count_resets([(0.0, 5), (1.0, 5)]) == 0


def test_three_resets_within_ten_minutes_is_a_reboot_loop() -> None:
    samples = [(0.0, 500), (100.0, 5), (200.0, 90), (300.0, 4), (400.0, 100), (500.0, 3)]
    assert is_reboot_loop(samples)
    assert not is_reboot_loop(samples[:-1])
    # Seen from much later the resets have aged out of the window.
    assert not is_reboot_loop(samples, now=100.0 + 601.0)


def test_resets_spread_over_more_than_the_window_are_not_a_loop() -> None:
    samples = [(0.0, 900), (10.0, 1), (400.0, 390), (410.0, 1), (800.0, 390), (810.0, 1)]
    assert count_resets(samples) == 3
    assert not is_reboot_loop(samples)
    assert is_reboot_loop(samples, window_s=1000.0)
    assert not is_reboot_loop([])


def test_reset_with_device_clock_going_back_is_still_seen() -> None:
    # No RTC: after the reboot the device reports ts from 0 until NTP syncs.
    samples = [(1_700_000_000.0, 7200), (5.0, 5)]
    assert count_resets(samples) == 1


def test_incremental_detector_matches_the_pure_function() -> None:
    samples = [(0.0, 500), (100.0, 5), (200.0, 90), (300.0, 4), (400.0, 100), (500.0, 3)]
    det = RebootLoopDetector()
    flags = [det.observe(ts, up) for ts, up in samples]
    assert flags == [False, True, False, True, False, True]
    assert det.in_loop(500.0)
    assert det.resets_in_window(500.0) == 3
    assert not det.in_loop(701.0)  # the reset at 100 s left the window
    assert det.resets_in_window(1200.0) == 0


@given(
    st.lists(st.tuples(st.floats(0, 5000), st.integers(0, 1000)), max_size=40),
    st.floats(60, 1200),
    st.integers(1, 5),
)
def test_detector_agrees_with_is_reboot_loop(
    samples: list[tuple[float, int]], window: float, min_resets: int
) -> None:
    samples.sort(key=lambda s: s[0])
    det = RebootLoopDetector(window_s=window, min_resets=min_resets)
    for ts, up in samples:
        det.observe(ts, up)
    if samples:
        now = samples[-1][0]
        assert det.in_loop(now) == is_reboot_loop(
            samples, now, window_s=window, min_resets=min_resets
        )


# ------------------------------------------------------------------------ time buckets


@pytest.mark.parametrize(
    ("ts", "width", "start"),
    [(0, 60, 0), (59.9, 60, 0), (60, 60, 60), (125.0, 60, 120), (-0.5, 60, -60),
     (1_700_000_123.4, 3600, 1_699_999_200)],
)  # fmt: skip
def test_bucket_start_floors_to_width(ts: float, width: int, start: int) -> None:
    assert bucket_start(ts, width) == start
    assert isinstance(bucket_start(ts, width), int)


def test_bucket_start_rejects_non_positive_width() -> None:
    with pytest.raises(ValueError):
        bucket_start(1.0, 0)


@given(st.floats(-1e10, 1e10), st.integers(1, 10**6))
def test_bucket_contains_its_timestamp(ts: float, width: int) -> None:
    s = bucket_start(ts, width)
    assert s <= ts < s + width


def test_bucket_accumulates_count_sum_min_max_last_and_mean() -> None:
    b = Bucket.of([3.0, 1.0, 5.0, 2.0])
    assert (b.count, b.sum, b.min, b.max, b.last, b.mean) == (4, 11.0, 1.0, 5.0, 2.0, 2.75)
    assert Bucket().mean is None


def test_merge_takes_last_from_the_later_bucket_and_ignores_empty_ones() -> None:
    a = Bucket.of([1.0, 2.0])
    a.merge(Bucket())
    assert a.last == 2.0
    assert Bucket().merge(a) == a
    assert Bucket.of([1.0]).merge(Bucket.of([7.0, 4.0])).last == 4.0


def _summary(b: Bucket) -> tuple[int, float, float, float]:
    return (b.count, b.sum, b.min, b.max)


def _copy(b: Bucket) -> Bucket:
    return replace(b)


value_lists = st.lists(st.integers(-(10**6), 10**6).map(float), max_size=20)


@given(value_lists, value_lists, value_lists)
def test_bucket_merge_is_associative(xs: list[float], ys: list[float], zs: list[float]) -> None:
    a, b, c = Bucket.of(xs), Bucket.of(ys), Bucket.of(zs)
    left = _copy(a).merge(b).merge(c)
    right = _copy(a).merge(_copy(b).merge(c))
    assert _summary(left) == _summary(right)
    assert _summary(left) == _summary(Bucket.of(xs + ys + zs))


@given(value_lists, value_lists)
def test_bucket_merge_is_commutative_for_count_sum_min_max(
    xs: list[float], ys: list[float]
) -> None:
    a, b = Bucket.of(xs), Bucket.of(ys)
    assert _summary(_copy(a).merge(b)) == _summary(_copy(b).merge(a))


def test_series_fills_gaps_with_none() -> None:
    buckets = {0: Bucket.of([1.0, 3.0]), 120: Bucket.of([5.0]), 240: Bucket()}
    assert series(buckets, 0, 300, 60) == [2.0, None, 5.0, None, None]
    assert series(buckets, 0, 300, 60, stat="max") == [3.0, None, 5.0, None, None]
    assert series(buckets, 0, 300, 60, stat="count") == [2.0, None, 1.0, None, None]
    assert series(buckets, 30, 130, 60) == [2.0, None, 5.0]  # partial buckets at both ends
    assert series(buckets, 300, 300, 60) == []
    with pytest.raises(ValueError):
        series(buckets, 0, 60, 60, stat="median")  # type: ignore[arg-type]


@given(st.floats(-1e9, 1e9), st.floats(0, 1e6), st.integers(1, 86_400))
def test_series_has_one_entry_per_bucket_in_range(start: float, span: float, width: int) -> None:
    end = start + span
    assume((end - start) / width < 10_000)
    expected = 0
    s = bucket_start(start, width)
    while s < end:
        expected += 1
        s += width
    assert len(series({}, start, end, width)) == expected == len(bucket_starts(start, end, width))


def test_rollup_merges_minute_buckets_into_hours_keeping_last() -> None:
    minutes = {0: Bucket.of([1.0]), 60: Bucket.of([3.0]), 3600: Bucket.of([10.0])}
    hours = rollup({60: minutes[60], 0: minutes[0], 3600: minutes[3600]}, 3600)
    assert sorted(hours) == [0, 3600]
    assert (hours[0].count, hours[0].mean, hours[0].last) == (2, 2.0, 3.0)
    assert minutes[0].count == 1  # inputs are not mutated


def test_default_retention_keeps_minutes_a_day_and_hours_thirty_days() -> None:
    assert DEFAULT_RETENTION.widths == (60, 3600)
    assert DEFAULT_RETENTION.keep_s(60) == 86_400
    assert DEFAULT_RETENTION.keep_s(3600) == 30 * 86_400
    with pytest.raises(ValueError):
        DEFAULT_RETENTION.keep_s(300)


def test_bucket_expires_once_wholly_older_than_retention() -> None:
    now = 10 * 86_400.0
    horizon = now - 86_400
    assert not expired(horizon - 30, 60, now)  # straddles the horizon
    assert expired(horizon - 60, 60, now)
    assert not expired(now - 60, 60, now)
    assert expired(now - 31 * 86_400, 3600, now)
    assert not expired(now - 29 * 86_400, 3600, now)
    assert expiry_cutoff(60, now) == horizon - 60


def test_retention_is_configurable_and_validated() -> None:
    policy = RetentionPolicy(tiers=((10, 600),))
    assert expired(0, 10, 700.0, policy)
    assert not expired(100, 10, 700.0, policy)
    with pytest.raises(ValueError):
        RetentionPolicy(tiers=((60, 10), (60, 20)))
    with pytest.raises(ValueError):
        RetentionPolicy(tiers=((0, 10),))


# ------------------------------------------------------------------------------ groups


def test_group_health_counts_and_averages_over_online_devices() -> None:
    devices = [
        DeviceHealth("a", True, HealthState.HEALTHY, telemetry(cpu_pct=10.0, rssi=-50)),
        DeviceHealth("b", True, HealthState.DEGRADED, telemetry(cpu_pct=30.0, rssi=-70)),
        DeviceHealth("c", False, HealthState.UNHEALTHY, telemetry(cpu_pct=99.0, rssi=-99)),
        DeviceHealth("d", True, HealthState.UNHEALTHY, telemetry(cpu_pct=50.0, rssi=-60)),
        DeviceHealth("e", True),
    ]
    g = GroupHealth.from_devices(devices)
    assert (g.total, g.online, g.offline) == (5, 4, 1)
    assert (g.healthy, g.degraded, g.unhealthy, g.unknown) == (1, 1, 1, 1)
    assert g.means["cpu_pct"] == pytest.approx(30.0)
    assert g.means["rssi"] == pytest.approx(-60.0)
    assert set(g.means) == {"uptime_s", "heap_free", "rssi", "cpu_pct", "temp_c", "errors"}


def test_empty_or_all_offline_group_has_no_means() -> None:
    g = GroupHealth.from_devices([DeviceHealth("a", False, HealthState.HEALTHY, telemetry())])
    assert (g.total, g.online, g.offline) == (1, 0, 1)
    assert all(v is None for v in g.means.values())
    assert GroupHealth.from_devices([]).total == 0


# --------------------------------------------------------------------------- anomalies


def test_one_extreme_outlier_masks_itself_under_zscore_but_not_mad() -> None:
    # Six devices, one with a runaway error count. With the sample SD no z-score can exceed
    # (n-1)/sqrt(n) = 2.04 here, so z > 3 is impossible: the outlier inflates the SD itself.
    values = {"a": 1.0, "b": 2.0, "c": 1.0, "d": 2.0, "e": 1.0, "f": 10_000.0}
    n = len(values)
    z = zscore_scores(values)
    assert max(abs(s) for s in z.values()) <= (n - 1) / math.sqrt(n) + 1e-12
    assert zscore_outliers(values) == []
    found = mad_outliers(values, metric="errors")
    assert [(a.device_id, a.metric, a.value, a.method) for a in found] == [
        ("f", "errors", 10_000.0, "mad")
    ]
    assert found[0].score > 1000


@given(st.integers(5, 10), st.floats(1e3, 1e9))
def test_zscore_cannot_reach_three_in_small_groups(n: int, outlier: float) -> None:
    values = {f"d{i}": float(i % 2) for i in range(n - 1)} | {"x": outlier}
    assert zscore_outliers(values) == []
    assert [a.device_id for a in mad_outliers(values)] == ["x"]


def test_zscore_flags_an_outlier_in_a_large_group() -> None:
    values = {f"d{i}": 50.0 + (i % 5) for i in range(40)} | {"hot": 95.0}
    found = zscore_outliers(values, metric="cpu_pct")
    assert [(a.device_id, a.method) for a in found] == [("hot", "zscore")]
    assert found[0].score > 3


def test_all_equal_values_have_no_anomalies() -> None:
    values = {f"d{i}": 42.0 for i in range(10)}
    assert mad_outliers(values) == []
    assert zscore_outliers(values) == []
    assert set(mad_scores(values).values()) == {0.0}


def test_mad_zero_falls_back_to_mean_absolute_deviation() -> None:
    # Most values equal: MAD is 0, so the score uses 1.253314 * mean absolute deviation.
    values = {"a": 5.0, "b": 5.0, "c": 5.0, "d": 5.0, "e": 6.0, "f": 50.0}
    scores = mad_scores(values)
    mean_ad = (1.0 + 45.0) / 6
    assert scores["f"] == pytest.approx(45.0 / (1.253314 * mean_ad))
    assert scores["a"] == 0.0
    assert [a.device_id for a in mad_outliers(values)] == ["f"]


def test_modified_zscore_formula() -> None:
    values = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 100.0}
    # median 3, |dev| = 2,1,0,1,97 -> MAD 1
    assert mad_scores(values)["e"] == pytest.approx(0.6745 * 97)
    assert mad_scores(values)["a"] == pytest.approx(-0.6745 * 2)


def test_below_min_samples_no_anomalies_are_reported() -> None:
    values = {"a": 1.0, "b": 1.0, "c": 1.1, "d": 1e6}
    assert mad_outliers(values) == []
    assert [a.device_id for a in mad_outliers(values, min_samples=4)] == ["d"]


def test_non_finite_values_are_ignored() -> None:
    values = {f"d{i}": 1.0 + i * 0.01 for i in range(6)} | {"nan": math.nan, "x": 500.0}
    assert "nan" not in mad_scores(values)
    assert [a.device_id for a in mad_outliers(values)] == ["x"]


def test_anomalies_are_sorted_worst_first_and_signed() -> None:
    values = {f"d{i}": 10.0 + (i % 3) for i in range(9)} | {"lo": -500.0, "hi": 100.0}
    found = mad_outliers(values)
    assert [a.device_id for a in found] == ["lo", "hi"]
    assert found[0].score < 0 < found[1].score


@given(
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(-1000, 1000), min_size=5,
                    max_size=30),
    st.integers(-(10**6), 10**6),
    st.floats(0.01, 100),
)  # fmt: skip
def test_mad_outliers_are_invariant_under_shift_and_positive_scale(
    raw: dict[str, int], shift: int, scale: float
) -> None:
    values = {k: float(v) for k, v in raw.items()}
    moved = {k: (v + shift) * scale for k, v in values.items()}
    before, after = mad_scores(values), mad_scores(moved)
    for k in values:
        assert after[k] == pytest.approx(before[k], rel=1e-9, abs=1e-9)

    def clear(scores: dict[str, float]) -> set[str]:
        # Outside a hair's breadth of the threshold, where rounding could flip a verdict.
        return {k for k, s in scores.items() if abs(abs(s) - 3.5) > 1e-6}

    stable = clear(before) & clear(after)
    flagged_before = {a.device_id for a in mad_outliers(values)} & stable
    flagged_after = {a.device_id for a in mad_outliers(moved)} & stable
    assert flagged_before == flagged_after


@given(
    st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=60),
    st.floats(-1e6, 1e6),
    st.floats(1e3, 1e9),
    st.booleans(),
)
def test_single_far_outlier_from_a_tight_cluster_is_always_found_by_mad(
    noise: list[float], center: float, distance: float, below: bool
) -> None:
    values = {f"d{i}": center + e for i, e in enumerate(noise)}
    values["planted"] = center + (-distance if below else distance)
    found = mad_outliers(values)
    assert found and found[0].device_id == "planted"


def test_underflowing_spread_still_ranks_the_farthest_device_first() -> None:
    # MAD is the subnormal 5e-324, so both far scores overflow to infinity.
    values = {"a": 0.0, "b": 0.0, "c": 1.0, "d": 5e-324, "planted": 1000.0}
    found = mad_outliers(values)
    assert [a.device_id for a in found[:2]] == ["planted", "c"]
    assert all(math.isfinite(a.score) for a in found)


def test_group_anomalies_checks_each_metric_over_online_devices() -> None:
    devices = [
        DeviceHealth(f"d{i}", True, HealthState.HEALTHY, telemetry(temp_c=40.0 + i % 2))
        for i in range(6)
    ]
    devices.append(DeviceHealth("hot", True, HealthState.UNHEALTHY, telemetry(temp_c=90.0)))
    devices.append(DeviceHealth("gone", False, None, telemetry(temp_c=-30.0)))
    found = group_anomalies(devices, metrics=["temp_c"])
    assert [(a.device_id, a.metric) for a in found] == [("hot", "temp_c")]
    assert group_anomalies(devices, metrics=["temp_c"], method="zscore") == []
    assert all(isinstance(a, Anomaly) for a in group_anomalies(devices))
    with pytest.raises(ValueError):
        group_anomalies(devices, metrics=["voltage"])


# ------------------------------------------------------------------------------ cohorts


def test_cohort_comparison_of_offline_rates() -> None:
    updated = [True, False, False, False]  # 25 % offline
    baseline = [True] + [False] * 9  # 10 % offline
    c = compare_cohorts(updated, baseline)
    assert c.updated_mean == pytest.approx(0.25)
    assert c.baseline_mean == pytest.approx(0.1)
    assert c.difference == pytest.approx(0.15)
    assert c.ratio == pytest.approx(2.5)
    assert (c.updated_n, c.baseline_n) == (4, 10)


def test_cohort_ratio_with_a_zero_baseline() -> None:
    assert compare_cohorts([0, 0], [0, 0, 0]).ratio == 1.0
    assert compare_cohorts([1, 0], [0, 0, 0]).ratio == math.inf


def test_cohort_comparison_needs_both_cohorts() -> None:
    with pytest.raises(ValueError, match="updated"):
        compare_cohorts([], [1.0])
    with pytest.raises(ValueError, match="baseline"):
        compare_cohorts([1.0], [])


def test_default_thresholds_match_the_documented_esp32_bounds() -> None:
    th = DEFAULT_THRESHOLDS
    assert (th.heap_free_degraded, th.heap_free_unhealthy) == (40_000, 15_000)
    assert (th.rssi_degraded, th.rssi_unhealthy) == (-80, -90)
    assert (th.cpu_pct_degraded, th.cpu_pct_unhealthy) == (85, 95)
    assert (th.temp_c_degraded, th.temp_c_unhealthy) == (70, 85)
    assert (th.errors_degraded, th.errors_unhealthy) == (5, 20)
