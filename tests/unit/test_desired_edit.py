"""Desired-state edits: the exact update sent, the diff it makes, capability warnings."""

from __future__ import annotations

import pytest

from fleet_tui.domain.shadow import ShadowDocument
from fleet_tui.tui.desired_edit import EditError, describe_row, parse_edit, plan_edit
from fleet_tui.tui.shadow_view import ShadowHistory, ShadowView, leaf_timestamps

KEYS_2_1 = ["led_is_on", "ota_sha256", "ota_url", "target_version", "telemetry_interval_s"]
KEYS_2_0 = ["led_is_on", "ota_sha256", "ota_url", "target_version"]


def doc(desired: dict, reported: dict, version: int = 4) -> ShadowDocument:
    return ShadowDocument.from_dict({"state": {"desired": desired, "reported": reported},
                                     "version": version, "timestamp": 100})


def test_edit_sends_exactly_the_patch_at_the_current_version() -> None:
    edit = plan_edit("t1", "", "led_is_on=false telemetry_interval_s=30",
                     doc({"led_is_on": True}, {}), "2.1.2", KEYS_2_1)
    assert edit.body() == {"state": {"desired": {"led_is_on": False,
                                                 "telemetry_interval_s": 30}}, "version": 4}
    assert [describe_row(r) for r in edit.rows] == [
        ("led_is_on", "true", "false"), ("telemetry_interval_s", "(unset)", "30")]
    assert edit.warnings == []


def test_null_deletes_and_nested_keys_diff_per_leaf() -> None:
    edit = plan_edit("t1", "", "led_is_on=null cfg.a=2", doc({"led_is_on": True,
                                                             "cfg": {"a": 1, "b": 1}}, {}),
                     "2.1.2", [*KEYS_2_1, "cfg"])
    rows = {r.key: (r.before, r.after) for r in edit.rows}
    assert rows == {"led_is_on": (True, None), "cfg.a": (1, 2)}
    assert describe_row(edit.rows[1]) == ("led_is_on", "true", "(deleted)")


def test_a_key_the_firmware_does_not_understand_is_warned_about() -> None:
    edit = plan_edit("t1", "", "telemetry_interval_s=30 led_is_on=true", doc({}, {}), "2.0.4",
                     KEYS_2_0)
    assert len(edit.warnings) == 1
    assert "2.0.4 does not understand 'telemetry_interval_s'" in edit.warnings[0]


def test_unknown_firmware_and_no_change_are_warned_about() -> None:
    edit = plan_edit("t1", "", "led_is_on=true", doc({"led_is_on": True}, {}), "9.9.9", None)
    assert edit.rows == []
    assert any("no change" in w for w in edit.warnings)
    assert any("9.9.9 is not in the release manifest" in w for w in edit.warnings)


def test_named_shadows_are_not_gated_by_the_firmware_manifest() -> None:
    edit = plan_edit("t1", "config", "rate=5", None, "2.0.4", KEYS_2_0)
    assert edit.warnings == [] and edit.version is None
    assert edit.body() == {"state": {"desired": {"rate": 5}}}


@pytest.mark.parametrize(("text", "col"), [("led_is_on=true oops", 16), ("=1", 1), ("", 0)])
def test_bad_edit_text_points_at_its_column(text: str, col: int) -> None:
    with pytest.raises(EditError) as err:
        parse_edit(text)
    assert err.value.col == col


def test_edits_the_service_would_refuse_are_refused_before_sending() -> None:
    deep = "a.b.c.d.e.f.g.h=1"
    with pytest.raises(EditError, match="400"):
        plan_edit("t1", "", deep, None, "2.1.2", KEYS_2_1)


def test_history_keeps_versions_in_order_once_each() -> None:
    history = ShadowHistory(size=3)
    for v in (2, 1, 2, 3, 4):
        history.add(ShadowView(doc({}, {"x": v}, v)))
    assert [h.version for h in history.views] == [2, 3, 4]
    assert not history.add(ShadowView(None))


def test_leaf_timestamps_follow_the_metadata_tree() -> None:
    d = ShadowDocument.empty().apply_update(
        {"state": {"reported": {"a": 1, "n": {"b": 2}, "arr": [1, 2]}}}, 1234).document
    stamps = leaf_timestamps(d.metadata, "reported")
    assert stamps == {"a": 1234, "n.b": 1234, "arr": 1234}
    assert leaf_timestamps(d.metadata, "desired") == {}
