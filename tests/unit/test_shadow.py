"""Shadow document semantics: AWS IoT Device Shadow examples, every rejection path, and
hypothesis properties of the merge, the delta, versioning and the limits."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleet_tui.domain.shadow import (
    DEFAULT_LIMITS,
    ShadowDocument,
    ShadowError,
    ShadowLimits,
    ShadowUpdate,
    dumps,
    error_payload,
    internal_error,
    no_shadow_error,
    parse_client_token,
    parse_request,
    stored_in_sync,
    too_many_requests_error,
    validate_request,
)

NOW = 1_700_000_000
ROOMY = ShadowLimits(max_state_bytes=1 << 20, max_depth=32)


def update(doc: ShadowDocument, request: dict[str, Any], now: int = NOW, **kw: Any) -> ShadowUpdate:
    """Apply a request the way the service does: through the wire format."""
    return doc.apply_update(
        parse_request(orjson.dumps(request), kw.pop("limits", DEFAULT_LIMITS)),
        now,
        kw.pop("limits_apply", DEFAULT_LIMITS),
        **kw,
    )


def shadow(desired: dict | None = None, reported: dict | None = None) -> ShadowDocument:
    state: dict[str, Any] = {}
    if desired is not None:
        state["desired"] = desired
    if reported is not None:
        state["reported"] = reported
    return update(ShadowDocument.empty(), {"state": state}).document


def rejected(
    payload: bytes | dict, doc: ShadowDocument | None = None, **limits: int
) -> ShadowError:
    """The ShadowError that parsing and applying ``payload`` raises."""
    lim = ShadowLimits(**limits) if limits else DEFAULT_LIMITS
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    with pytest.raises(ShadowError) as info:
        (doc or ShadowDocument.empty()).apply_update(parse_request(raw, lim), NOW, lim)
    return info.value


# ---- AWS documentation examples ------------------------------------------------------------


def test_delta_example_from_aws_docs() -> None:
    doc = shadow(
        desired={"color": "RED", "state": "STOP"}, reported={"color": "GREEN", "engine": "ON"}
    )
    assert doc.delta() == {"color": "RED", "state": "STOP"}
    assert doc.delta_metadata() == {"color": {"timestamp": NOW}, "state": {"timestamp": NOW}}
    assert not doc.in_sync


def test_nested_delta_contains_the_path_to_the_root() -> None:
    doc = shadow(
        desired={"lights": {"color": {"r": 255, "g": 255, "b": 255}}},
        reported={"lights": {"color": {"r": 255, "g": 0, "b": 255}}},
    )
    assert doc.delta() == {"lights": {"color": {"g": 255}}}
    assert doc.delta_metadata() == {"lights": {"color": {"g": {"timestamp": NOW}}}}


def test_array_update_replaces_the_whole_array() -> None:
    doc = shadow(desired={"colors": ["RED", "GREEN", "BLUE"]})
    doc = update(doc, {"state": {"desired": {"colors": ["RED"]}}}).document
    assert doc.desired == {"colors": ["RED"]}
    assert doc.metadata == {"desired": {"colors": {"timestamp": NOW}}}


def test_arrays_in_delta_compare_as_whole_values() -> None:
    doc = shadow(desired={"colors": ["RED", "GREEN"]}, reported={"colors": ["RED"]})
    assert doc.delta() == {"colors": ["RED", "GREEN"]}
    assert shadow(desired={"c": [1, 2]}, reported={"c": [1, 2]}).in_sync


def test_array_with_null_element_is_rejected() -> None:
    err = rejected({"state": {"desired": {"colors": [None, "RED", "GREEN"]}}})
    assert (err.code, err.message) == (400, "State contains an invalid node")
    err = rejected({"state": {"desired": {"m": [[1, None]]}}})
    assert err.code == 400


def test_desired_null_removes_the_desired_section() -> None:
    doc = shadow(desired={"color": "RED"}, reported={"color": "GREEN"})
    result = update(doc, {"state": {"reported": {"color": "red"}, "desired": None}})
    assert result.document.desired == {}
    assert result.document.state == {"reported": {"color": "red"}}
    assert result.document.metadata == {"reported": {"color": {"timestamp": NOW}}}
    assert result.accepted["state"] == {"reported": {"color": "red"}, "desired": None}
    assert result.accepted["metadata"] == {
        "reported": {"color": {"timestamp": NOW}},
        "desired": {"timestamp": NOW},
    }
    assert result.delta is None


def test_reported_null_removes_the_reported_section() -> None:
    doc = shadow(desired={"color": "RED"}, reported={"color": "RED"})
    doc = update(doc, {"state": {"reported": None}}).document
    assert doc.reported == {} and doc.delta() == {"color": "RED"}


def test_empty_shadow_is_a_valid_document() -> None:
    doc = ShadowDocument.empty()
    assert doc.state == {} and doc.metadata == {} and doc.version == 0 and doc.in_sync
    assert doc.to_dict() == {"state": {}, "metadata": {}, "version": 0, "timestamp": 0}


def test_delta_rules_from_the_mqtt_topic_docs() -> None:
    doc = shadow(desired={"a": 1, "b": 2, "c": 3}, reported={"a": 1, "b": 9, "z": 0})
    # reported-only keys are left out; desired-only keys are in; equal values are out
    assert doc.delta() == {"b": 2, "c": 3}
    # deleted from reported while still desired: in the delta
    doc = update(doc, {"state": {"reported": {"a": None}}}).document
    assert doc.delta() == {"a": 1, "b": 2, "c": 3}


def test_update_accepted_payload_matches_aws_format() -> None:
    result = update(
        ShadowDocument.empty(),
        {"state": {"desired": {"color": "red", "power": "on"}}, "clientToken": "tok"},
    )
    assert result.accepted == {
        "state": {"desired": {"color": "red", "power": "on"}},
        "metadata": {"desired": {"color": {"timestamp": NOW}, "power": {"timestamp": NOW}}},
        "version": 1,
        "timestamp": NOW,
        "clientToken": "tok",
    }


def test_delta_payload_carries_the_whole_delta_and_desired_metadata() -> None:
    doc = shadow(desired={"led_is_on": True}, reported={"led_is_on": False})
    result = update(
        doc, {"state": {"desired": {"telemetry_interval_s": 10}}, "clientToken": "c1"}, now=NOW + 5
    )
    assert result.delta == {
        "version": 2,
        "timestamp": NOW + 5,
        "state": {"led_is_on": True, "telemetry_interval_s": 10},
        "metadata": {
            "led_is_on": {"timestamp": NOW},
            "telemetry_interval_s": {"timestamp": NOW + 5},
        },
        "clientToken": "c1",
    }


def test_documents_payload_has_previous_and_current() -> None:
    doc = shadow(reported={"temp": 20})
    result = update(doc, {"state": {"reported": {"temp": 21}}, "clientToken": "x"}, now=NOW + 1)
    assert result.documents == {
        "previous": {
            "state": {"reported": {"temp": 20}},
            "metadata": {"reported": {"temp": {"timestamp": NOW}}},
            "version": 1,
        },
        "current": {
            "state": {"reported": {"temp": 21}},
            "metadata": {"reported": {"temp": {"timestamp": NOW + 1}}},
            "version": 2,
        },
        "timestamp": NOW + 1,
        "clientToken": "x",
    }


def test_first_update_documents_previous_is_the_empty_version_zero() -> None:
    result = update(ShadowDocument.empty(), {"state": {"reported": {"a": 1}}})
    assert result.documents["previous"] == {"state": {}, "metadata": {}, "version": 0}
    assert "clientToken" not in result.documents


# ---- merge semantics ---------------------------------------------------------------------


def test_null_deletes_a_key_and_its_metadata() -> None:
    doc = shadow(reported={"a": 1, "b": {"c": 2, "d": 3}})
    doc = update(doc, {"state": {"reported": {"a": None, "b": {"c": None}}}}).document
    assert doc.reported == {"b": {"d": 3}}
    assert doc.metadata == {"reported": {"b": {"d": {"timestamp": NOW}}}}


def test_objects_left_empty_by_deletions_are_removed() -> None:
    doc = shadow(reported={"tags": {"location": "factory-A"}, "x": 1})
    doc = update(doc, {"state": {"reported": {"tags": {"location": None}}}}).document
    assert doc.reported == {"x": 1}
    assert doc.metadata == {"reported": {"x": {"timestamp": NOW}}}


def test_deleting_a_missing_key_is_a_no_op_but_still_a_new_version() -> None:
    doc = shadow(reported={"a": 1})
    result = update(doc, {"state": {"reported": {"nope": None}}})
    assert result.document.reported == {"a": 1}
    assert result.document.version == 2
    assert result.accepted["metadata"] == {"reported": {"nope": {"timestamp": NOW}}}


def test_objects_merge_recursively_and_keep_untouched_metadata() -> None:
    doc = shadow(reported={"net": {"rssi": -60, "ssid": "plant"}})
    doc = update(doc, {"state": {"reported": {"net": {"rssi": -70}}}}, now=NOW + 9).document
    assert doc.reported == {"net": {"rssi": -70, "ssid": "plant"}}
    assert doc.metadata["reported"] == {
        "net": {"rssi": {"timestamp": NOW + 9}, "ssid": {"timestamp": NOW}}
    }


def test_object_replaces_scalar_and_scalar_replaces_object() -> None:
    doc = shadow(reported={"a": 1, "b": {"c": 1}})
    doc = update(doc, {"state": {"reported": {"a": {"x": 1}, "b": 7}}}).document
    assert doc.reported == {"a": {"x": 1}, "b": 7}
    assert doc.metadata["reported"] == {"a": {"x": {"timestamp": NOW}}, "b": {"timestamp": NOW}}


def test_empty_object_over_scalar_leaves_nothing_so_the_key_goes() -> None:
    # RFC 7386: the object replaces the scalar; an empty object is never stored.
    doc = shadow(reported={"a": 1, "b": 2})
    assert update(doc, {"state": {"reported": {"a": {}}}}).document.reported == {"b": 2}
    assert update(doc, {"state": {"reported": {"c": {"d": None}}}}).document.reported == {
        "a": 1,
        "b": 2,
    }


def test_a_leaf_named_timestamp_does_not_confuse_metadata() -> None:
    doc = shadow(reported={"timestamp": 5, "o": {"timestamp": {"timestamp": 1}}})
    assert doc.metadata["reported"] == {
        "timestamp": {"timestamp": NOW},
        "o": {"timestamp": {"timestamp": {"timestamp": NOW}}},
    }
    doc = update(doc, {"state": {"reported": {"o": {"timestamp": None}}}}).document
    assert doc.reported == {"timestamp": 5}


def test_version_starts_at_one_and_increments_on_every_accepted_update() -> None:
    doc = ShadowDocument.empty()
    for expected in range(1, 5):
        doc = update(doc, {"state": {"reported": {"same": True}}}).document
        assert doc.version == expected


def test_update_with_matching_version_is_accepted() -> None:
    doc = shadow(reported={"a": 1})
    assert update(doc, {"state": {"reported": {"a": 2}}, "version": 1}).document.version == 2


def test_update_never_mutates_the_stored_document_or_the_request() -> None:
    doc = shadow(desired={"a": {"b": [1, 2]}}, reported={"a": {"b": [1]}})
    before = doc.to_json()
    request = {"state": {"desired": {"a": {"b": [3], "c": 1}}, "reported": {"a": None}}}
    request_before = copy.deepcopy(request)
    new = doc.apply_update(request, NOW + 1).document
    assert doc.to_json() == before
    assert request == request_before
    request["state"]["desired"]["a"]["b"].append(99)  # type: ignore[index]
    assert new.desired == {"a": {"b": [3], "c": 1}}


def test_bool_is_not_a_number_but_int_and_float_compare_by_value() -> None:
    assert shadow(desired={"x": True}, reported={"x": 1}).delta() == {"x": True}
    assert shadow(desired={"x": 0}, reported={"x": False}).delta() == {"x": 0}
    assert shadow(desired={"x": 25}, reported={"x": 25.0}).in_sync
    assert shadow(desired={"x": [1, True]}, reported={"x": [1, 1]}).delta() == {"x": [1, True]}


def test_desired_object_against_reported_scalar_puts_the_whole_subtree_in_delta() -> None:
    doc = shadow(desired={"cfg": {"a": 1, "b": {"c": 2}}}, reported={"cfg": "legacy"})
    assert doc.delta() == {"cfg": {"a": 1, "b": {"c": 2}}}
    assert doc.delta_metadata() == {
        "cfg": {"a": {"timestamp": NOW}, "b": {"c": {"timestamp": NOW}}}
    }


def test_delta_is_published_only_for_a_desired_update_with_a_difference() -> None:
    doc = shadow(desired={"led": True}, reported={"led": False})
    assert update(doc, {"state": {"reported": {"temp": 3}}}).delta is None  # reported only
    assert update(doc, {"state": {"reported": {"led": True}}}).delta is None
    converged = update(doc, {"state": {"reported": {"led": True}}}).document
    assert update(converged, {"state": {"desired": {"led": True}}}).delta is None
    assert update(converged, {"state": {"desired": {"led": False}}}).delta is not None
    assert update(converged, {"state": {"desired": None}}).delta is None


def test_desired_persists_after_convergence_and_document_is_in_sync() -> None:
    doc = shadow(desired={"telemetry_interval_s": 10}, reported={"telemetry_interval_s": 30})
    doc = update(doc, {"state": {"reported": {"telemetry_interval_s": 10}}}).document
    assert doc.desired == {"telemetry_interval_s": 10}
    assert doc.in_sync and doc.delta() == {} and doc.delta_metadata() == {}


def test_prune_converged_desired_is_opt_in() -> None:
    doc = shadow(
        desired={"led": True, "cfg": {"a": 1, "b": 2}, "keep": 5},
        reported={"led": False, "cfg": {"a": 0, "b": 2}},
    )
    result = update(
        doc, {"state": {"reported": {"led": True, "cfg": {"a": 1}}}}, prune_converged_desired=True
    )
    assert result.document.desired == {"keep": 5}
    assert result.document.metadata["desired"] == {"keep": {"timestamp": NOW}}
    kept = update(doc, {"state": {"reported": {"led": True, "cfg": {"a": 1}}}})
    assert kept.document.desired == doc.desired


def test_prune_of_everything_drops_the_desired_section() -> None:
    doc = shadow(desired={"led": True}, reported={"led": False})
    doc = update(doc, {"state": {"reported": {"led": True}}}, prune_converged_desired=True).document
    assert doc.state == {"reported": {"led": True}}
    assert "desired" not in doc.metadata


# ---- get / delete / storage ----------------------------------------------------------------


def test_get_response_has_state_delta_metadata_version_and_token() -> None:
    doc = shadow(desired={"color": "RED"}, reported={"color": "GREEN"})
    assert doc.get_response("g1", now=NOW + 3) == {
        "state": {
            "desired": {"color": "RED"},
            "reported": {"color": "GREEN"},
            "delta": {"color": "RED"},
        },
        "metadata": {
            "desired": {"color": {"timestamp": NOW}},
            "reported": {"color": {"timestamp": NOW}},
        },
        "version": 1,
        "timestamp": NOW + 3,
        "clientToken": "g1",
    }
    in_sync = shadow(reported={"a": 1}).get_response()
    assert "delta" not in in_sync["state"] and "clientToken" not in in_sync
    assert in_sync["timestamp"] == NOW


def test_delete_response_and_version_continuing_after_delete() -> None:
    doc = update(shadow(reported={"a": 1}), {"state": {"reported": {"a": 2}}}).document
    assert doc.delete_response("d1", NOW + 7) == {
        "version": 2,
        "timestamp": NOW + 7,
        "clientToken": "d1",
    }
    assert doc.delete_response(None, NOW) == {"version": 2, "timestamp": NOW}
    reborn = update(ShadowDocument.empty(doc.version), {"state": {"reported": {"b": 1}}})
    assert reborn.document.version == 3


def test_no_shadow_error_names_the_shadow() -> None:
    err = no_shadow_error("esp32-0001", "ota", "t")
    assert (err.code, err.message, err.client_token) == (
        404,
        "No shadow exists with name: 'ota'",
        "t",
    )
    assert no_shadow_error("esp32-0001").message == "No shadow exists with name: 'esp32-0001'"


def test_other_error_helpers() -> None:
    assert too_many_requests_error("t").code == 429
    assert internal_error().code == 500
    assert str(ShadowError(409, "Version conflict")) == "409 Version conflict"


def test_to_dict_is_a_private_copy_and_round_trips() -> None:
    doc = shadow(desired={"a": {"b": [1, {"c": 2}]}}, reported={"x": 1.5})
    data = doc.to_dict()
    data["state"]["desired"]["a"]["b"].append(3)
    assert doc.desired == {"a": {"b": [1, {"c": 2}]}}
    assert ShadowDocument.from_dict(doc.to_dict()) == doc
    assert ShadowDocument.from_json(doc.to_json()).to_json() == doc.to_json()
    assert orjson.loads(doc.to_json()) == doc.to_dict()


@pytest.mark.parametrize(
    "data",
    [
        {"state": [], "version": 1},
        {"state": {"desired": 5}},
        {"state": {"delta": {}}},
        {"metadata": {"reported": "x"}},
        {"version": -1},
        {"version": True},
        {"timestamp": "now"},
    ],
)
def test_from_dict_rejects_malformed_storage(data: dict) -> None:
    with pytest.raises(ValueError):
        ShadowDocument.from_dict(data)


# ---- rejections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"not json",
        b'{"state": {}',
        b"{'a': 1}",
        b"[]",
        b"5",
        b'"state"',
        b"null",
        b'{"state": {"reported": {"x": 1e400}}}',
    ],
)
def test_malformed_payload_is_400_invalid_json(payload: bytes) -> None:
    err = rejected(payload)
    assert (err.code, err.message, err.client_token) == (400, "Invalid JSON", None)


def test_payload_that_is_not_utf8_is_415() -> None:
    err = rejected(b'{"state": {"reported": {"a": "\xff\xfe"}}}')
    assert (err.code, err.message) == (
        415,
        "Unsupported documented encoding; supported encoding is UTF-8",
    )


def test_raw_payload_over_the_limit_is_413() -> None:
    payload = orjson.dumps({"state": {"reported": {"a": "x" * 200}}})
    err = rejected(payload, max_payload_bytes=100)
    assert (err.code, err.message) == (413, "The payload exceeds the maximum size allowed")
    assert (
        len(orjson.dumps({"state": {}, "junk": "x" * 200_000})) > DEFAULT_LIMITS.max_payload_bytes
    )
    assert rejected({"state": {}, "junk": "x" * 200_000}).code == 413


@pytest.mark.parametrize(
    ("request_doc", "message"),
    [
        ({"desired": {"a": 1}}, "Missing required node: state"),
        ({"state": 5}, "State node must be an object"),
        ({"state": None}, "State node must be an object"),
        ({"state": [1]}, "State node must be an object"),
        ({"state": {"desired": 5}}, "Desired node must be an object"),
        ({"state": {"desired": [1]}}, "Desired node must be an object"),
        ({"state": {"desired": "on"}}, "Desired node must be an object"),
        ({"state": {"reported": True}}, "Reported node must be an object"),
        ({"state": {"delta": {"a": 1}}}, "State contains an invalid node"),
        ({"state": {"desired": {}, "metadata": {}}}, "State contains an invalid node"),
        ({"state": {}, "version": -1}, "Invalid version"),
        ({"state": {}, "version": "3"}, "Invalid version"),
        ({"state": {}, "version": 1.0}, "Invalid version"),
        ({"state": {}, "version": True}, "Invalid version"),
        ({"state": {}, "version": None}, "Invalid version"),
    ],
)
def test_malformed_request_is_400_and_echoes_the_token(request_doc: dict, message: str) -> None:
    err = rejected({**request_doc, "clientToken": "abc"})
    assert (err.code, err.message, err.client_token) == (400, message, "abc")
    assert error_payload(err, NOW) == {
        "code": 400,
        "message": message,
        "timestamp": NOW,
        "clientToken": "abc",
    }


def test_version_beyond_64_bits_is_400_invalid_version() -> None:
    err = rejected(b'{"state": {}, "version": 18446744073709551616, "clientToken": "b"}')
    assert (err.code, err.message, err.client_token) == (400, "Invalid version", "b")


def test_error_payload_omits_client_token_when_there_is_none() -> None:
    err = rejected({"desired": {}})
    assert error_payload(err, NOW) == {
        "code": 400,
        "message": "Missing required node: state",
        "timestamp": NOW,
    }


@pytest.mark.parametrize("token", ["x" * 65, "€" * 22, 5, None, ["a"], {"t": 1}])
def test_invalid_client_token_is_400_and_not_echoed(token: Any) -> None:
    err = rejected({"state": {"reported": {"a": 1}}, "clientToken": token})
    assert (err.code, err.message, err.client_token) == (400, "Invalid clientToken", None)


def test_client_token_of_64_bytes_is_accepted_and_echoed() -> None:
    token = "t" * 64
    result = update(ShadowDocument.empty(), {"state": {"desired": {"a": 1}}, "clientToken": token})
    assert result.accepted["clientToken"] == token
    assert result.documents["clientToken"] == token
    assert result.delta is not None and result.delta["clientToken"] == token


def test_only_state_version_and_client_token_are_read() -> None:
    request = parse_request(
        orjson.dumps(
            {"state": {"reported": {"a": 1}}, "timestamp": 5, "metadata": {"x": 1}, "extra": [None]}
        )
    )
    assert request == {"state": {"reported": {"a": 1}}}


def test_stale_or_future_version_is_409_and_echoes_token() -> None:
    doc = update(shadow(reported={"a": 1}), {"state": {"reported": {"a": 2}}}).document
    for version in (0, 1, 3, 99):
        err = rejected(
            {"state": {"reported": {"a": 3}}, "version": version, "clientToken": "v"}, doc
        )
        assert (err.code, err.message, err.client_token) == (409, "Version conflict", "v")


def nested(levels: int) -> dict[str, Any]:
    """A section ``levels`` deep: {"k1": {"k2": ... {"kN": 1}}}."""
    tree: Any = 1
    for level in range(levels, 0, -1):
        tree = {f"k{level}": tree}
    return tree


def test_six_levels_of_nesting_are_accepted_and_seven_are_400() -> None:
    update(ShadowDocument.empty(), {"state": {"desired": nested(6)}})
    err = rejected({"state": {"desired": nested(7)}, "clientToken": "deep"})
    assert (err.code, err.message, err.client_token) == (
        400,
        "JSON contains too many levels of nesting; maximum is 6",
        "deep",
    )


def test_arrays_count_as_a_level_of_nesting() -> None:
    section = nested(5)
    section["k1"]["k2"]["k3"]["k4"]["k5"] = [1]
    update(ShadowDocument.empty(), {"state": {"reported": section}})
    section["k1"]["k2"]["k3"]["k4"]["k5"] = [[1]]
    assert rejected({"state": {"reported": section}}).code == 400


def test_depth_limit_is_configurable_and_in_the_message() -> None:
    err = rejected({"state": {"reported": nested(4)}}, max_depth=3)
    assert err.message == "JSON contains too many levels of nesting; maximum is 3"


def test_depth_limit_lowered_under_a_stored_document_blocks_deepening_but_allows_repair() -> None:
    doc = shadow(reported=nested(5))
    strict = ShadowLimits(max_depth=3)
    with pytest.raises(ShadowError) as info:
        doc.apply_update({"state": {"reported": {"x": 1}}}, NOW, strict)
    assert info.value.code == 400
    repaired = doc.apply_update({"state": {"reported": {"k1": None}}}, NOW, strict)
    assert repaired.document.reported == {}


def test_state_over_8k_is_413_and_metadata_does_not_count() -> None:
    err = rejected({"state": {"reported": {"blob": "x" * 8200}}, "clientToken": "big"})
    assert (err.code, err.message, err.client_token) == (
        413,
        "The payload exceeds the maximum size allowed",
        "big",
    )
    # many tiny leaves: metadata is far larger than the state, yet the state fits
    many = {f"k{i}": 1 for i in range(900)}
    doc = update(ShadowDocument.empty(), {"state": {"reported": many}}).document
    assert len(orjson.dumps(doc.state)) <= 8192 < len(orjson.dumps(doc.metadata))


def test_size_limit_applies_to_the_merged_result() -> None:
    doc = shadow(desired={"a": "x" * 5000})
    before = doc.to_json()
    err = rejected({"state": {"reported": {"b": "y" * 5000}}}, doc)
    assert err.code == 413
    assert doc.to_json() == before
    # deleting makes room again
    doc = update(doc, {"state": {"desired": None, "reported": {"b": "y" * 5000}}}).document
    assert doc.state == {"reported": {"b": "y" * 5000}}


def test_hand_built_requests_are_validated_too() -> None:
    doc = ShadowDocument.empty()
    with pytest.raises(ShadowError, match="Desired node"):
        doc.apply_update({"state": {"desired": 5}}, NOW)
    with pytest.raises(ShadowError, match="invalid node"):
        doc.apply_update({"state": {"desired": {"t": (1, 2)}}}, NOW)
    with pytest.raises(ShadowError, match="invalid node"):
        doc.apply_update({"state": {"desired": {"f": float("nan")}}}, NOW)
    with pytest.raises(ShadowError, match="invalid node"):
        doc.apply_update({"state": {"desired": {1: 1}}}, NOW)
    with pytest.raises(ShadowError, match="invalid node"):
        doc.apply_update({"state": {"desired": {"big": 2**70}}}, NOW)
    with pytest.raises(ShadowError, match="Invalid JSON"):
        doc.apply_update([], NOW)  # type: ignore[arg-type]
    assert validate_request({"state": {}, "version": 0, "clientToken": "c", "x": 1}) == {
        "state": {},
        "version": 0,
        "clientToken": "c",
    }


def test_parse_client_token_for_get_and_delete() -> None:
    assert parse_client_token(b"") is None
    assert parse_client_token(b"  ") is None
    assert parse_client_token(b"{}") is None
    assert parse_client_token(b'{"clientToken": "g"}') == "g"
    for bad in (b"[1]", b"{", b'{"clientToken": 1}'):
        with pytest.raises(ShadowError) as info:
            parse_client_token(bad)
        assert info.value.code == 400


@pytest.mark.parametrize(
    "field", ["max_state_bytes", "max_depth", "max_client_token", "max_payload_bytes"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError):
        ShadowLimits(**{field: 0})


def test_dumps_is_compact_json() -> None:
    assert dumps({"a": [1, None]}) == b'{"a":[1,null]}'


# ---- hypothesis ------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "led", "cfg", "timestamp"])
SCALARS = (
    st.sampled_from([0, 1, 1.0, True, False, "", "x", 25, 25.0])
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
ARRAYS = st.lists(SCALARS | st.dictionaries(KEYS, SCALARS | st.none(), max_size=2), max_size=3)
PATCH_VALUES = st.recursive(
    SCALARS | ARRAYS | st.none(),
    lambda children: st.dictionaries(KEYS, children, max_size=3),
    max_leaves=8,
)
SECTION_PATCH = st.none() | st.dictionaries(KEYS, PATCH_VALUES, max_size=4)
STATE_PATCH = st.fixed_dictionaries(
    {}, optional={"desired": SECTION_PATCH, "reported": SECTION_PATCH}
)
REQUESTS = st.builds(lambda state: {"state": state}, STATE_PATCH)
HISTORY = st.lists(STATE_PATCH, max_size=6)

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(history: list[dict], limits: ShadowLimits = ROOMY) -> ShadowDocument:
    doc = ShadowDocument.empty()
    for i, state in enumerate(history):
        with contextlib.suppress(ShadowError):
            doc = doc.apply_update({"state": state}, NOW + i, limits).document
    return doc


def reference_merge(section: dict, patch: dict | None) -> dict:
    """The specification, written the slow obvious way."""
    if patch is None:
        return {}
    out = copy.deepcopy(section)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = reference_merge(out[key] if isinstance(out.get(key), dict) else {}, value)
            if merged:
                out[key] = merged
            else:
                out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    return (numbers or type(a) is type(b)) and a == b


def reference_delta(desired: dict, reported: dict) -> dict:
    out = {}
    for key, want in desired.items():
        if key not in reported:
            out[key] = want
        elif isinstance(want, dict) and isinstance(reported[key], dict):
            sub = reference_delta(want, reported[key])
            if sub:
                out[key] = sub
        elif not json_equal(want, reported[key]):
            out[key] = want
    return out


def metadata_mirrors(state: dict, meta: dict, *, stamp: int | None = None) -> bool:
    """Every leaf of ``state`` has ``{"timestamp": T}`` in ``meta`` and nothing else."""
    if state.keys() != meta.keys():
        return False
    for key, value in state.items():
        if isinstance(value, dict):
            if not isinstance(meta[key], dict) or not metadata_mirrors(
                value, meta[key], stamp=stamp
            ):
                return False
        elif set(meta[key]) != {"timestamp"} or not isinstance(meta[key]["timestamp"], int):
            return False
        if stamp is not None and not isinstance(value, dict) and meta[key]["timestamp"] != stamp:
            return False
    return True


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def timestamps_erased(meta: Any) -> Any:
    if isinstance(meta, dict):
        if set(meta) == {"timestamp"} and isinstance(meta["timestamp"], int):
            return "T"
        return {k: timestamps_erased(v) for k, v in meta.items()}
    return meta


@PROPS
@given(HISTORY, STATE_PATCH)
def test_merge_matches_the_reference_specification(history: list, patch: dict) -> None:
    doc = build(history)
    new = doc.apply_update({"state": patch}, NOW + 100, ROOMY).document
    assert json_equal(new.desired, reference_merge(doc.desired, patch.get("desired", doc.desired)))
    assert json_equal(
        new.reported, reference_merge(doc.reported, patch.get("reported", doc.reported))
    )
    assert metadata_mirrors(new.desired, new.metadata.get("desired", {}))
    assert metadata_mirrors(new.reported, new.metadata.get("reported", {}))


@PROPS
@given(HISTORY)
def test_delta_matches_the_reference_and_its_metadata_mirrors_it(history: list) -> None:
    doc = build(history)
    assert json_equal(doc.delta(), reference_delta(doc.desired, doc.reported))
    assert metadata_mirrors(doc.delta(), doc.delta_metadata())
    assert doc.in_sync == (doc.delta() == {})
    # What the registry reads back for the device table says the same, stored or on the wire.
    assert stored_in_sync(orjson.loads(orjson.dumps(doc.to_dict()))) == doc.in_sync


@PROPS
@given(HISTORY)
def test_reporting_exactly_the_delta_empties_it(history: list) -> None:
    doc = build(history)
    report = orjson.loads(orjson.dumps({"state": {"reported": doc.delta()}}))
    new = doc.apply_update(report, NOW + 100, ROOMY).document
    assert new.delta() == {}
    assert new.in_sync
    assert json_equal(new.desired, doc.desired)


@PROPS
@given(HISTORY, REQUESTS, st.integers(0, 10))
def test_applying_the_same_update_twice_equals_once(
    history: list, request: dict, later: int
) -> None:
    doc = build(history)
    once = doc.apply_update(request, NOW + 100, ROOMY).document
    twice = once.apply_update(request, NOW + 100 + later, ROOMY).document
    assert twice.version == once.version + 1
    assert json_equal(twice.state, once.state)
    assert timestamps_erased(twice.metadata) == timestamps_erased(once.metadata)


@PROPS
@given(st.lists(REQUESTS, min_size=1, max_size=8))
def test_version_strictly_increases_by_one_per_accepted_update(requests: list) -> None:
    doc = ShadowDocument.empty()
    small = ShadowLimits(max_state_bytes=150, max_depth=3)
    for i, request in enumerate(requests):
        try:
            new = doc.apply_update(request, NOW + i, small).document
        except ShadowError:
            continue
        assert new.version == doc.version + 1
        assert new.timestamp == NOW + i
        doc = new


@PROPS
@given(st.lists(REQUESTS, min_size=1, max_size=10), st.integers(40, 400), st.integers(1, 5))
def test_no_accepted_document_ever_exceeds_the_limits(
    requests: list, max_bytes: int, max_depth: int
) -> None:
    limits = ShadowLimits(max_state_bytes=max_bytes, max_depth=max_depth)
    doc = ShadowDocument.empty()
    for i, request in enumerate(requests):
        try:
            doc = doc.apply_update(request, NOW + i, limits).document
        except ShadowError as err:
            assert err.code in (400, 413)
            continue
        assert len(orjson.dumps(doc.state)) <= max_bytes
        assert depth_of(doc.desired) <= max_depth
        assert depth_of(doc.reported) <= max_depth


def test_one_validated_request_on_many_documents_stamps_each_second_anew() -> None:
    """A request validated once (a release's desired state) is applied to many documents:
    within a second they share its metadata stamps, a later second gets its own."""
    request = validate_request({"state": {"desired": {"ota": {"v": "2.4.1"}, "x": 1}},
                                "clientToken": "engine"})
    a = shadow(reported={"fw": "2.2.0"}).apply_update(request, NOW)
    b = shadow(desired={"y": 2}).apply_update(request, NOW)
    later = a.document.apply_update(request, NOW + 5)
    assert a.accepted["metadata"] is b.accepted["metadata"]
    assert a.accepted["metadata"] == {"desired": {"ota": {"v": {"timestamp": NOW}},
                                                  "x": {"timestamp": NOW}}}
    assert later.accepted["metadata"] == {"desired": {"ota": {"v": {"timestamp": NOW + 5}},
                                                      "x": {"timestamp": NOW + 5}}}
    assert later.document.metadata["desired"]["x"] == {"timestamp": NOW + 5}
    assert b.document.metadata["desired"]["y"] == {"timestamp": NOW}
    # the same as the request applied without validating it first
    plain = shadow(reported={"fw": "2.2.0"}).apply_update(dict(request), NOW)
    assert (plain.accepted, plain.document.to_dict()) == (a.accepted, a.document.to_dict())


@PROPS
@given(st.lists(REQUESTS, min_size=1, max_size=12), st.integers(40, 400))
def test_the_size_limit_is_decided_on_the_exact_merged_state(
    requests: list, max_bytes: int
) -> None:
    """The limit is checked against a running upper bound of the state's size, and the
    merged state serialized only when that bound is over it: the verdict is still the
    exact size's, 413 exactly when the merged state is over the limit."""
    limits = ShadowLimits(max_state_bytes=max_bytes, max_depth=32)
    doc = ShadowDocument.empty()
    for i, request in enumerate(requests):
        try:
            exact = len(orjson.dumps(doc.apply_update(request, NOW + i, ROOMY).document.state))
        except ShadowError:
            continue  # invalid whatever the size
        try:
            doc = doc.apply_update(request, NOW + i, limits).document
        except ShadowError as err:
            assert err.code == 413 and exact > max_bytes
            continue
        assert exact <= max_bytes


@PROPS
@given(HISTORY, REQUESTS, st.one_of(st.none(), st.integers(0, 8)), st.integers(40, 300))
def test_a_rejected_update_never_changes_the_document(
    history: list, request: dict, version: int | None, max_bytes: int
) -> None:
    doc = build(history)
    before = doc.to_json()
    before_dict = doc.to_dict()
    if version is not None:
        request = {**request, "version": version}
    limits = ShadowLimits(max_state_bytes=max_bytes, max_depth=3)
    try:
        result = doc.apply_update(request, NOW + 100, limits)
    except ShadowError:
        pass
    else:
        # accepted ones leave the old document alone too (it is immutable)
        assert result.document.version == doc.version + 1
    assert doc.to_json() == before
    assert doc.to_dict() == before_dict


@PROPS
@given(HISTORY)
def test_to_dict_from_dict_round_trip_is_exact(history: list) -> None:
    doc = build(history)
    again = ShadowDocument.from_dict(doc.to_dict())
    assert again == doc
    assert again.to_json() == doc.to_json()
    assert ShadowDocument.from_json(doc.to_json()).to_json() == doc.to_json()
    assert again.delta() == doc.delta()


@PROPS
@given(HISTORY, REQUESTS)
def test_payloads_are_consistent_with_the_new_document(history: list, request: dict) -> None:
    doc = build(history)
    result = doc.apply_update(request, NOW + 100, ROOMY)
    new = result.document
    assert result.accepted["version"] == new.version
    assert result.documents["previous"]["version"] == doc.version
    assert result.documents["current"] == {
        "state": new.state,
        "metadata": new.metadata,
        "version": new.version,
    }
    assert result.documents["previous"]["state"] == doc.state
    wants_delta = isinstance(request["state"].get("desired"), dict) and new.delta() != {}
    assert (result.delta is not None) == wants_delta
    if result.delta is not None:
        assert result.delta["state"] == new.delta()
    assert result.accepted["state"] == request["state"]
    assert metadata_mirrors(request["state"], result.accepted["metadata"], stamp=NOW + 100)
    orjson.dumps(result.accepted)
    orjson.dumps(result.documents)


@PROPS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_parsed_or_rejected_with_a_code(payload: bytes) -> None:
    try:
        request = parse_request(payload)
    except ShadowError as err:
        assert err.code in (400, 413, 415)
    else:
        assert set(request) <= {"state", "version", "clientToken"}


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda ch: (
        st.lists(ch, max_size=3)
        | st.dictionaries(
            st.sampled_from(["state", "desired", "reported", "version", "clientToken", "a"]),
            ch,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@PROPS
@given(JSONISH)
def test_arbitrary_json_is_accepted_or_rejected_never_crashes(value: Any) -> None:
    try:
        payload = orjson.dumps(value)
    except orjson.JSONEncodeError:
        assume(False)
        return
    doc = shadow(desired={"a": 1}, reported={"a": 2})
    before = doc.to_json()
    try:
        doc.apply_update(parse_request(payload), NOW)
    except ShadowError as err:
        assert err.code in (400, 409, 413)
    assert doc.to_json() == before


def test_a_parsed_request_is_checked_again_only_under_other_limits() -> None:
    """parse_request's validation carries over to apply_update under the same limits;
    under others (stricter ones) the request is checked again."""
    loose = ShadowLimits(max_client_token=200)
    raw = orjson.dumps({"state": {"reported": {"a": {"b": 1}}}, "clientToken": "t" * 100})
    parsed = parse_request(raw, loose)
    assert parsed == {"state": {"reported": {"a": {"b": 1}}}, "clientToken": "t" * 100}
    assert orjson.dumps(parsed) == raw
    doc = ShadowDocument.empty()
    assert doc.apply_update(parsed, NOW, loose).accepted == \
        doc.apply_update(dict(parsed), NOW, loose).accepted
    with pytest.raises(ShadowError) as err:
        doc.apply_update(parsed, NOW, DEFAULT_LIMITS)
    assert err.value.code == 400 and err.value.message == "Invalid clientToken"
