"""The import's fast row builder writes exactly the rows the one-device path writes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_tui.domain.query import reported_attributes
from fleet_tui.registry.bulk_load import DeviceProfiles, NewDevice, device_batches, tag_tuples
from fleet_tui.registry.models import SOURCE_OPERATOR, SOURCE_REPORTED

keys = st.sampled_from(["region", "site", "fw_version", "app_version", "n", "x.y", "tags"])
scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.sampled_from(["2.1.0", "v3", "12", "-1.5e3", "eu", ""]), st.none())
values: st.SearchStrategy[Any] = st.one_of(scalars, st.lists(scalars, max_size=2),
                                           st.dictionaries(keys, scalars, max_size=2))
devices = st.lists(st.builds(
    NewDevice,
    st.uuids().map(str),
    st.sampled_from([None, "rev-a"]),
    st.sampled_from([None, "2.0.1", "2.10.0"]),
    st.dictionaries(keys, st.sampled_from(["eu", "us", "12", "2.1.0"]), max_size=3),
    st.dictionaries(keys, values, max_size=4),
), max_size=30, unique_by=lambda d: d.id)


class FewShared(DeviceProfiles):
    MIN_SHARED = 2  # the rest of a small fleet goes the unshared way


@settings(max_examples=200, deadline=None)
@given(devices, st.integers(1, 7), st.booleans())
def test_batched_rows_equal_the_per_device_rows(devs: list[NewDevice], size: int,
                                                few_shared: bool) -> None:
    batches = list(device_batches(devs, size, FewShared() if few_shared else None))
    assert [row[0] for b in batches for row in b.device_rows()] == [d.id for d in devs]
    assert all(len(b.ids) <= size for b in batches)
    expected = []
    for dev in devs:
        # Each device's tags in primary-key order (source, key): in-order b-tree inserts.
        expected += sorted(
            tag_tuples(dev.id, SOURCE_OPERATOR, dev.tags)
            + tag_tuples(dev.id, SOURCE_REPORTED, reported_attributes(dev.reported)),
            key=lambda row: (row[1], row[2]),
        )
    assert [row for b in batches for row in b.tag_rows()] == expected


def test_values_equal_in_python_keep_their_own_stored_form() -> None:
    # 1 == 1.0 == True as dictionary keys; the caches must not hand one the other's row.
    seq = [1, True, 1.0, 0, False]
    assert [tag_tuples("d", SOURCE_REPORTED, {"x": v})[0][3] for v in seq] == \
        ["1", "true", "1.0", "0", "false"]
    devs = [NewDevice(f"d{i}", reported={"x": v}) for i, v in enumerate(seq)]
    rows = [row for b in device_batches(devs, 2) for row in b.tag_rows()]
    assert [row[3] for row in rows] == ["1", "true", "1.0", "0", "false"]
