"""The group query language: parsing, errors with positions, and SQL == in-memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlmodel import SQLModel

from fleet_tui.domain.query import (
    And,
    Compare,
    DeviceRecord,
    GroupMatcher,
    GroupQuery,
    In,
    Not,
    QuerySyntaxError,
    glob_to_like,
)
from fleet_tui.registry.engine import create_registry_engine
from fleet_tui.registry.registry import NewDevice, Registry


def q(text: str) -> GroupQuery:
    return GroupQuery.parse(text)


def test_design_example_parses_into_the_expected_tree() -> None:
    ast = q('location = "factory-A" and firmware_version < 2.2.0 '
            'and not tag.deployment_ring in ("canary")').ast
    assert isinstance(ast, And)
    first, second, third = ast.items
    assert isinstance(first, Compare) and first.field.name == "location"
    assert first.field.kind == "reported" and first.value.text == "factory-A"
    assert isinstance(second, Compare) and second.op == "<" and second.value.text == "2.2.0"
    assert isinstance(third, Not) and isinstance(third.item, In)
    assert third.item.field.kind == "tag"


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ("firmware_version <", 19, "expected a value after '<'"),
        ('location = "factory-A" and firmware_version <', 46, "expected a value after '<'"),
        ("(tag.x = 1", 11, "expected ')'"),
        ("tag.x = 1 tag.y = 2", 11, "expected 'and', 'or' or end of query"),
        ('a = "open', 5, "unterminated string"),
        ("a ! 1", 3, "unexpected character"),
        ("", 1, "empty query"),
        ("firmware_version > banana", 20, "'banana' is not a version"),
        ("online < true", 10, "online compares only"),
        ("has(tag.x", 10, "expected ')'"),
        ("foo.bar = 1", 1, "unknown field 'foo.bar'"),
        ("tag.x in ()", 11, "expected a value after '('"),
        ("tag.x not 3", 11, "expected 'in' after 'not'"),
        ("tag.x ~ 5", 9, "expected a quoted pattern"),
    ],
)
def test_syntax_errors_name_the_column_and_what_was_expected(
    text: str, col: int, fragment: str
) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        q(text)
    assert info.value.col == col
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"col {col}: ")


def test_unknown_bare_field_is_refused_with_a_suggestion() -> None:
    with pytest.raises(QuerySyntaxError, match="unknown field 'locaton'; did you mean 'location'"):
        GroupQuery.parse('locaton = "x"', known_reported={"location", "led_is_on"})
    assert GroupQuery.parse('location = "x"', known_reported={"location"})


def test_versions_compare_as_versions_not_strings() -> None:
    dev = DeviceRecord("d", firmware_version="2.10.0")
    assert q("firmware_version > 2.9.1").matches(dev)
    assert not q("firmware_version < 2.9.1").matches(dev)
    assert q("firmware_version = 2.10").matches(dev)
    assert q("firmware_version > 2.10.0-rc1").matches(dev)


def test_missing_values_make_comparisons_false_and_negations_true() -> None:
    dev = DeviceRecord("d")
    assert not q("firmware_version < 9.0.0").matches(dev)
    assert q("not firmware_version < 9.0.0").matches(dev)
    assert q('tag.ring != "canary"').matches(dev)
    assert not q("has(tag.ring)").matches(dev)


def test_glob_translation_escapes_like_wildcards() -> None:
    assert glob_to_like("eu-*") == "eu-%"
    assert glob_to_like("100%_a?") == "100\\%\\_a_"
    assert q('tag.region ~ "eu-*"').matches(DeviceRecord("d", tags={"region": "eu-west"}))
    assert not q('tag.region ~ "eu-*"').matches(DeviceRecord("d", tags={"region": "EU-west"}))
    assert not q('tag.region ~ "eu_*"').matches(DeviceRecord("d", tags={"region": "eu-west"}))


# ---------------------------------------------------- SQL == in-memory (hypothesis)

VERSIONS = ["2.0.4", "2.1.2", "2.9.1", "2.10.0", "3.0.0-rc1", "3.0.0"]
TAG_VALUES = {
    "ring": ["canary", "early", "general"],
    "region": ["eu-west", "eu-central", "us-east"],
    "prio": ["1", "2", "10", "x"],
}
# Values that would be SQL if anyone formatted them into a statement.
NASTY = ["a'b", "x; DROP TABLE device; --", "' OR 1=1 --", 'q"uote', "back\\slash", "%", "_"]
REPORTED_VALUES = {
    "location": ["factory-A", "factory-B", *NASTY],
    "led_is_on": [True, False],
    "telemetry_interval_s": [30, 60, 300, 1.5],
    "target_version": ["2.1.0", "2.10.0", "not-a-version"],
    "ota_status": ["idle", "downloading", "failed"],
}


@st.composite
def devices(draw: st.DrawFn, index: int) -> DeviceRecord:
    tags = {k: draw(st.sampled_from(v)) for k, v in TAG_VALUES.items() if draw(st.booleans())}
    rep_keys = [k for k in REPORTED_VALUES if draw(st.booleans())]
    reported: dict[str, object] = {k: draw(st.sampled_from(REPORTED_VALUES[k])) for k in rep_keys}
    if "location" in reported:
        reported["tags"] = {"location": reported.pop("location")}
    return DeviceRecord(
        id=f"d{index}",
        firmware_version=draw(st.sampled_from([*VERSIONS, None])),
        hardware_rev=draw(st.sampled_from(["rev-a", "rev-b", None])),
        online=draw(st.booleans()),
        health=draw(st.sampled_from([None, "healthy", "degraded"])),
        tags=tags,
        reported=reported,
    )


@st.composite
def fleets(draw: st.DrawFn) -> list[DeviceRecord]:
    n = draw(st.integers(min_value=0, max_value=25))
    return [draw(devices(i)) for i in range(n)]


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


FIELD_VALUES: dict[str, list[str]] = {
    "id": [quote("d1"), quote("d12"), "d3"],
    "firmware_version": [*VERSIONS, quote("2.1.2")],
    "hardware_rev": [quote("rev-a"), "rev-b", quote("rev-z")],
    "health": [quote("healthy"), quote("degraded")],
    "online": ["true", "false"],
    **{f"tag.{k}": [quote(x) for x in v] + ["2", "10"] for k, v in TAG_VALUES.items()},
    "location": [quote(x) for x in REPORTED_VALUES["location"]],  # type: ignore[misc]
    "led_is_on": ["true", "false", quote("true")],
    "telemetry_interval_s": ["30", "60", "59.5", "1.5", quote("60")],
    "target_version": ["2.1.0", "2.10.0", quote("not-a-version")],
    "ota_status": [quote("idle"), quote("failed")],
    "absent_key": [quote("x"), "1"],
}
GLOBS = [quote(g) for g in ["eu-*", "*-A", "rev-?", "*", "factory-*", "*%*", "d1*"]]


@st.composite
def leaf(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(sorted(FIELD_VALUES)))
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "in", "glob", "has"]))
    if kind == "has":
        return f"has({field})"
    if kind == "glob":
        return f"{field} ~ {draw(st.sampled_from(GLOBS))}"
    if kind == "in":
        vals = draw(st.lists(st.sampled_from(FIELD_VALUES[field]), min_size=1, max_size=3))
        neg = "not " if draw(st.booleans()) else ""
        return f"{field} {neg}in ({', '.join(vals)})"
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
    return f"{field} {op} {draw(st.sampled_from(FIELD_VALUES[field]))}"


queries = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda s: f"not {s}"),
    ),
    max_leaves=6,
)


def load(registry: Registry, fleet: list[DeviceRecord]) -> None:
    with registry.transaction() as conn:
        for table in ("group_member", "tag", "device"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        registry.add_devices(
            [NewDevice(d.id, d.hardware_rev, d.firmware_version, d.tags, d.reported)
             for d in fleet],
            conn=conn,
        )
        registry.set_presence([(d.id, d.online, 0.0) for d in fleet], conn)
        registry.set_health([(d.id, d.health, None) for d in fleet], conn)


def check_equivalence(registry: Registry, fleet: list[DeviceRecord], texts: list[str]) -> None:
    load(registry, fleet)
    for text in texts:
        try:
            query = GroupQuery.parse(text)
        except QuerySyntaxError:
            continue  # e.g. ordering a non-version against a version field: both refuse
        expected = sorted(d.id for d in fleet if query.matches(d))
        got = registry.device_ids(where=text)
        assert sorted(got) == expected, text
        # The id-set form (counts, group membership) must agree too.
        assert registry.count_devices(where=text) == len(expected), text


@pytest.fixture(scope="module")
def memory_registry() -> Iterator[Registry]:
    engine = create_registry_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    yield Registry(engine)
    engine.dispose()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), texts=st.lists(queries, min_size=1, max_size=8))
def test_sql_result_equals_in_memory_result_sqlite(
    memory_registry: Registry, fleet: list[DeviceRecord], texts: list[str]
) -> None:
    assume(any(_parses(t) for t in texts))
    check_equivalence(memory_registry, fleet, texts)


def _parses(text: str) -> bool:
    try:
        GroupQuery.parse(text)
        return True
    except QuerySyntaxError:
        return False


@pytest.mark.parametrize("value", NASTY)
def test_sql_metacharacters_in_values_are_data_never_sql(
    memory_registry: Registry, value: str
) -> None:
    fleet = [
        DeviceRecord("d1", reported={"tags": {"location": value}}),
        DeviceRecord("d2", reported={"tags": {"location": "factory-A"}}),
    ]
    load(memory_registry, fleet)
    assert memory_registry.device_ids(where=f"location = {quote(value)}") == ["d1"]
    assert memory_registry.device_ids(where=f"location != {quote(value)}") == ["d2"]
    assert memory_registry.device_ids(where=f"location in ({quote(value)}, 'zz')") == ["d1"]
    # The statement carries the value as a bound parameter, not as SQL text.
    compiled = memory_registry.device_filter(where=f"location = {quote(value)}").compile()
    assert value in compiled.params.values()
    if len(value) > 1:
        assert value not in str(compiled)
    assert memory_registry.count_devices() == 2


@settings(max_examples=150, deadline=None)
@given(fleet=fleets(), texts=st.lists(st.one_of(queries, st.sampled_from(
    [f"tag.{k} = {v}" for k, vs in FIELD_VALUES.items() if k.startswith("tag.")
     for v in vs])), min_size=1, max_size=10))
def test_group_matcher_agrees_with_each_querys_own_evaluation(
        fleet: list[DeviceRecord], texts: list[str]) -> None:
    parsed = [(f"g{i}", GroupQuery.parse(t)) for i, t in enumerate(texts) if _parses(t)]
    assume(parsed)
    matcher = GroupMatcher(parsed)
    for record in fleet:
        assert matcher.matching(record) == [name for name, q in parsed if q.matches(record)]
