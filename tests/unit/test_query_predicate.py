"""The compiled in-memory predicate answers exactly as the reference evaluator."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleet_tui.domain.query import (
    DeviceRecord,
    GroupQuery,
    QuerySyntaxError,
    compile_predicate,
    evaluate,
    reported_attributes,
)
from tests.unit.test_query import fleets, queries


@settings(max_examples=300, deadline=None)
@given(fleet=fleets(), text=queries)
def test_compiled_predicate_equals_the_evaluator(fleet: list[DeviceRecord], text: str) -> None:
    try:
        query = GroupQuery.parse(text)
    except QuerySyntaxError:
        assume(False)
        return
    matches = compile_predicate(query.ast)
    for record in fleet:
        attrs = reported_attributes(record.reported)
        assert matches(record, attrs) == evaluate(query.ast, record), (text, record)


@given(st.sampled_from([1, 1.0, True, 0, False, "1", "true"]))
def test_equal_python_values_are_compared_in_their_own_stored_form(value: object) -> None:
    # 1 == 1.0 == True: a cache keyed on the value alone would answer for the wrong one.
    record = DeviceRecord("d", reported={"x": value})
    for text in ('x = "1"', 'x = "true"', 'x = "1.0"', "x = 1", "x = true", 'x = "0"'):
        query = GroupQuery.parse(text)
        for _ in range(2):
            assert compile_predicate(query.ast)(record, reported_attributes(record.reported)) \
                == evaluate(query.ast, record), (text, value)
