"""The registry on real SQLite and real PostgreSQL (every test runs on both)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from fleet_tui.registry import migrate
from fleet_tui.registry.errors import Conflict, FleetImportError, NotFound, RegistryError
from fleet_tui.registry.importer import import_fleet
from fleet_tui.registry.registry import GroupNode, NewDevice, Registry
from tests.conftest import SAMPLE_DATA


def sample_devices() -> list[dict]:
    return [json.loads(line) for line in (SAMPLE_DATA / "devices.jsonl").read_text().splitlines()]


def test_sample_fleet_imports_with_its_hierarchy(sample_registry: Registry) -> None:
    reg = sample_registry
    devices = sample_devices()
    assert reg.count_devices() == len(devices) == 2000
    assert len(reg.list_releases()) >= 4
    # A region's membership is the union of its sites', which are the union of their lines'.
    for region in ("eu-central", "apac"):
        expected = {d["id"] for d in devices if d["tags"]["region"] == region}
        assert set(reg.device_ids(group=region)) == expected
        node = reg.get_group(region)
        union: set[str] = set()
        for site in node.children:
            union |= set(reg.device_ids(group=site.name))
        assert union == expected


def test_dynamic_static_and_query_membership_agree_with_the_data(
    sample_registry: Registry,
) -> None:
    reg = sample_registry
    devices = sample_devices()
    canary = {d["id"] for d in devices if d["tags"]["deployment_ring"] == "canary"}
    assert set(reg.device_ids(group="canary-ring")) == canary
    assert 0.005 < len(canary) / len(devices) < 0.02
    legacy = {d["id"] for d in devices if d["firmware_version"].startswith("2.0.")}
    assert set(reg.device_ids(group="legacy-firmware")) == legacy
    assert reg.count_devices(group="lab-bench") == 8
    q = ('location = "factory-A" and firmware_version < 2.2.0 '
         'and not tag.deployment_ring in ("canary")')
    expected = {
        d["id"] for d in devices
        if d["reported"]["tags"]["location"] == "factory-A"
        and d["firmware_version"] in ("2.0.4", "2.1.2")
        and d["tags"]["deployment_ring"] != "canary"
    }
    assert set(reg.device_ids(where=q)) == expected
    # A group filter and a query combine with "and".
    both = set(reg.device_ids(group="eu-central", where='hardware_rev = "rev-c"'))
    assert both == {d["id"] for d in devices
                    if d["tags"]["region"] == "eu-central" and d["hardware_rev"] == "rev-c"}


def test_membership_of_a_mixed_tree_resolves_in_one_statement(registry: Registry) -> None:
    registry.add_devices([NewDevice(f"d{i}", "rev-a", "2.1.0", {"n": str(i)}) for i in range(10)])
    registry.create_group("root")
    registry.create_group("static-kid", members=["d1", "d2"], parent="root")
    registry.create_group("dyn-kid", query='tag.n in ("3", "4")', parent="root")
    registry.create_group("grandkid", members=["d9"], parent="static-kid")
    registry.get_group("root")  # group definitions are cached metadata; membership is data
    statements: list[str] = []
    sa.event.listen(registry.engine, "before_cursor_execute",
                    lambda *a: statements.append(a[2]) if a[2] != "BEGIN" else None)
    ids = registry.device_ids(group="root")
    assert sorted(ids) == ["d1", "d2", "d3", "d4", "d9"]
    assert len(statements) == 1 and "RECURSIVE" in statements[0].upper()


def test_group_cannot_become_its_own_ancestor(registry: Registry) -> None:
    registry.create_group("a")
    registry.create_group("b", parent="a")
    registry.create_group("c", parent="b")
    with pytest.raises(Conflict, match="cannot be its own ancestor"):
        registry.set_group_parent("a", "c")
    with pytest.raises(Conflict):
        registry.set_group_parent("a", "a")
    registry.set_group_parent("c", None)
    assert {g.name for g in registry.group_tree()} == {"a", "c"}


def test_group_errors_are_clear(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="col 9: expected a value"):
        registry.create_group("bad", query="tag.x = ")
    with pytest.raises(NotFound, match="no parent group 'nope'"):
        registry.create_group("orphan", query="tag.x = 1", parent="nope")
    registry.create_group("dup", query="tag.x = 1")
    with pytest.raises(Conflict, match="already exists"):
        registry.create_group("dup", query="tag.x = 2")
    with pytest.raises(NotFound, match="did you mean 'dup'"):
        registry.count_devices(group="dpu")
    with pytest.raises(NotFound, match="unknown devices ghost"):
        registry.create_group("ghosts", members=["ghost"])


def test_duplicate_device_id_is_refused_and_nothing_is_kept(registry: Registry) -> None:
    registry.add_devices([NewDevice("d1")])
    with pytest.raises(Conflict, match="'d1' already exists"):
        registry.add_devices([NewDevice("d2"), NewDevice("d1")])
    assert registry.device_ids() == ["d1"]


def test_bad_import_row_names_file_row_field_and_imports_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    import_fleet(registry, SAMPLE_DATA / "releases.json")
    before = registry.count_devices()
    rows = sample_devices()[:50]
    rows[36]["firmware_version"] = "two.three"
    bad = tmp_path / "devices.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(FleetImportError) as info:
        import_fleet(registry, bad)
    assert info.value.row == 37 and info.value.field == "firmware_version"
    assert f"{bad}:37: field 'firmware_version'" in str(info.value)
    assert registry.count_devices() == before == 0
    # A duplicate inside the file, and one against the registry.
    rows[36]["firmware_version"] = "2.1.0"
    rows[40]["id"] = rows[3]["id"]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(FleetImportError, match=":41: field 'id': duplicate device id"):
        import_fleet(registry, bad)
    registry.add_devices([NewDevice(rows[10]["id"])])
    # The failed imports dropped and rebuilt indexes inside their transaction: all still there.
    indexes = {i["name"] for i in sa.inspect(registry.engine).get_indexes("tag")}
    assert {"ix_tag_lookup", "ix_tag_num"} <= indexes
    del rows[40]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(FleetImportError, match="already exists"):
        import_fleet(registry, bad)
    assert registry.count_devices() == 1


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("{not json", None),
        ('{"id": "bad id with spaces"}', "id"),
        ('{"id": "ok", "tags": {"k": 5}}', "tags.k"),
        ('{"id": "ok", "colour": "red"}', "colour"),
        ('{"id": "ok", "hardware_rev": 3}', "hardware_rev"),
        ("[1, 2]", None),
    ],
)
def test_each_kind_of_bad_device_row_is_reported(
    registry: Registry, tmp_path: Path, line: str, field: str | None
) -> None:
    path = tmp_path / "devices.jsonl"
    path.write_text('{"id": "fine"}\n' + line + "\n")
    with pytest.raises(FleetImportError) as info:
        import_fleet(registry, path)
    assert info.value.row == 2 and info.value.field == field
    assert registry.count_devices() == 0


def test_cyclic_groups_in_an_import_file_are_refused(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    path.write_text(json.dumps([
        {"name": "a", "kind": "folder", "parent": "c"},
        {"name": "b", "kind": "folder", "parent": "a"},
        {"name": "c", "kind": "folder", "parent": "b"},
    ]))
    with pytest.raises(FleetImportError, match="cyclic group hierarchy"):
        import_fleet(registry, path)
    assert registry.group_tree() == []


def test_paged_listing_is_ordered_and_stable(sample_registry: Registry) -> None:
    ids = sorted(d["id"] for d in sample_devices())
    page = sample_registry.list_devices(offset=100, limit=50)
    assert [r.id for r in page] == ids[100:150]
    by_fw = sample_registry.list_devices(order_by="firmware_version", limit=None)
    keys = [r.firmware_version for r in by_fw]
    assert keys.index("2.0.4") < keys.index("2.1.2") < keys.index("2.2.0") < keys.index("2.3.0")


def test_a_page_of_devices_carries_their_most_specific_groups_and_sync_state(
        registry: Registry) -> None:
    registry.add_devices([NewDevice(f"d{i}", "rev-a", "2.1.0", {"line": f"l{i % 2}"})
                          for i in range(4)])
    registry.create_group("site")
    registry.create_group("line-0", query='tag.line = "l0"', parent="site")
    registry.create_group("line-1", query='tag.line = "l1"', parent="site")
    registry.create_group("bench", members=["d2"], parent="line-0")  # deeper than line-0
    registry.create_group("spares", members=["d3"])  # a root: line-1 is more specific
    registry.create_group("every-l1", query='tag.line = "l1"')  # a root: not shown
    converged = {"state": {"desired": {"led": True}, "reported": {"led": True}}, "version": 2}
    converging = {"state": {"desired": {"led": False}, "reported": {"led": True}},
                  "version": 3}
    registry.save_shadows([("d0", "", 2, converged), ("d1", "", 3, converging),
                           ("d2", "", 1, {**converging, "exists": False}),
                           ("d3", "cfg", 1, converging)])
    rows = {r.id: r for r in registry.list_devices(limit=None)}
    assert rows["d0"].groups == ("line-0",) and rows["d0"].in_sync is True
    assert rows["d1"].groups == ("line-1",) and rows["d1"].in_sync is False
    assert rows["d2"].groups == ("bench",) and rows["d2"].in_sync is None  # deleted shadow
    assert rows["d3"].groups == ("line-1",) and rows["d3"].in_sync is None  # named only
    # Equal depth: every one of them, by name.
    registry.create_group("zz-more", query='tag.line = "l0"', parent="site")
    assert registry.list_devices(limit=1)[0].groups == ("line-0", "zz-more")


def test_imported_rows_are_the_per_device_rows_shared_profile_or_not(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet_tui.domain.query import reported_attributes
    from fleet_tui.registry.bulk_load import DeviceProfiles, tag_tuples

    # A few shared profiles, then devices each with their own (a serial number): both
    # kinds in the same batches, on the profile tables' path and the plain rows' path.
    monkeypatch.setattr(DeviceProfiles, "MIN_SHARED", 3)
    devs = [NewDevice(f"d{i:03d}", f"rev-{i % 2}", ["2.0.1", "2.10.0", None][i % 3],
                      {"ring": "canary" if i % 4 else "early"},
                      {"tags": {"location": f"f{i % 2}"}, "n": i % 3, "ok": i % 2 == 0,
                       "serial": f"s{i}" if i >= 40 else "none", "nested": {"x": 1}})
            for i in range(120)]
    assert registry.add_devices(devs, batch=25) == 120
    expected = sorted(row for d in devs for row in
                      tag_tuples(d.id, "o", d.tags)
                      + tag_tuples(d.id, "r", reported_attributes(d.reported)))
    with registry.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT device_id, source, key, value, num, vkey "
                                      "FROM tag ORDER BY device_id, source, key")).all()
        devices = conn.execute(sa.text("SELECT id, hardware_rev, firmware_version, fw_key "
                                       "FROM device ORDER BY id")).all()
    assert [tuple(r) for r in stored] == expected
    assert [(r[0], r[1], r[2]) for r in devices] == [
        (d.id, d.hardware_rev, d.firmware_version) for d in devs]
    assert registry.count_devices(where="firmware_version >= 2.9.0") == 40
    assert registry.count_devices(where='serial = "s77" and ok = false') == 1


def test_page_groups_agree_with_sql_group_membership(sample_registry: Registry) -> None:
    # The page's groups come from the in-memory query evaluator over the page's rows;
    # SQL membership of each group is the reference.
    reg = sample_registry
    nodes = [n for root in reg.group_tree() for n in _walk_tree(root)]
    depth = {n.name: _depth(n, {m.id: m for m in nodes}) for n in nodes}
    direct: dict[str, list[str]] = {}
    for node in nodes:
        if node.kind == "folder":
            continue
        members = (reg.device_ids(where=node.query) if node.kind == "dynamic"
                   else reg.device_ids(group=node.name))  # the static ones have no subgroups
        for device_id in members:
            direct.setdefault(device_id, []).append(node.name)
    expected = {}
    for device_id, names in direct.items():
        deepest = max(depth[n] for n in names)
        expected[device_id] = tuple(sorted(n for n in names if depth[n] == deepest))
    pages = [reg.list_devices(limit=None),
             reg.list_devices(offset=500, limit=100, order_by="firmware_version",
                              descending=True),
             reg.list_devices(where='location = "factory-A"', offset=3, limit=40),
             reg.list_devices(group="eu-central", offset=10, limit=25)]
    assert len(pages[0]) == 2000 and [len(p) for p in pages[1:]] == [100, 40, 25]
    for page in pages:
        for row in page:
            assert row.groups == expected.get(row.id, ()), row.id


def _walk_tree(node: GroupNode) -> list[GroupNode]:
    return [node, *(n for child in node.children for n in _walk_tree(child))]


def _depth(node: GroupNode, by_id: dict[int, GroupNode]) -> int:
    return 0 if node.parent_id is None else 1 + _depth(by_id[node.parent_id], by_id)


def test_reported_state_mirrors_into_queryable_attributes(registry: Registry) -> None:
    registry.add_devices([NewDevice("d1", "rev-a", "2.0.4")])
    registry.apply_reported({"d1": {"firmware_version": "2.10.0", "led_is_on": True,
                                     "tags": {"location": "lab"}, "nested": {"x": 1}}})
    assert registry.device_ids(where="firmware_version > 2.9.0 and led_is_on = true") == ["d1"]
    assert registry.device_ids(where='location = "lab"') == ["d1"]
    registry.apply_reported({"d1": {"firmware_version": "2.10.0"}})
    assert registry.device_ids(where="has(location)") == []
    # A device first seen on the wire is registered.
    registry.apply_reported({"new-one": {"firmware_version": "1.0.0"}})
    assert registry.get_device("new-one").firmware_version == "1.0.0"


def test_shadow_documents_round_trip_with_versions(registry: Registry) -> None:
    doc = {"state": {"desired": {"led": True}}, "version": 3}
    registry.save_shadows([("d1", "", 3, doc), ("d1", "cfg", 1, {"version": 1})])
    registry.save_shadows([("d1", "", 4, {**doc, "version": 4})])
    stored = {(t, n): (v, d) for t, n, v, d in registry.load_shadows()}
    assert stored[("d1", "")][0] == 4 and stored[("d1", "")][1]["version"] == 4
    assert stored[("d1", "cfg")][0] == 1


def test_migrations_are_idempotent_and_reach_head(empty_db_url: str) -> None:
    reg = Registry.open(empty_db_url)
    migrate.upgrade(reg.engine)  # a second run is a no-op
    with reg.engine.connect() as conn:
        version = conn.execute(sa.text("select version_num from alembic_version")).scalar()
    assert version == migrate.head() == "0006"  # bump with each new migration
    reg.close()


def _run_in_threads(works: list[Callable[[], None]]) -> list[BaseException]:
    """Run each in its own thread at once; what they raised."""
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(w,)) for w in works]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_read_then_write_transactions_all_commit(db_url: str) -> None:
    # set_operator_tags reads (the device exists) before it writes. On SQLite a deferred
    # BEGIN let another writer commit in between, and the upgrade to a write then failed
    # at once with "database is locked" (busy_timeout does not cover a stale snapshot).
    Registry.open(db_url).close()
    registries = [Registry.open(db_url, migrate_schema=False) for _ in range(4)]
    registries[0].add_devices([NewDevice(id=f"d{k}") for k in range(4)])

    def write(k: int) -> None:
        for n in range(100):
            registries[k].set_operator_tags(f"d{k}", {"n": str(n)})

    errors = _run_in_threads([lambda k=k: write(k) for k in range(4)])
    try:
        assert errors == []
        assert [registries[0].get_device(f"d{k}").tags["n"] for k in range(4)] == ["99"] * 4
    finally:
        for reg in registries:
            reg.close()


def test_ingest_keeps_what_each_update_does_not_carry(registry: Registry) -> None:
    registry.add_devices([NewDevice(id="a"), NewDevice(id="b")])
    registry.record_ingest([("a", True, 10.0)], [("b", "degraded", {"rssi": -90})])
    registry.record_ingest([("b", True, 11.0)], [("a", "healthy", {"rssi": -50}),
                                                 ("new-one", "healthy", None)])
    registry.record_ingest([("c", False, 12.0)], [])  # first seen by presence: registered
    rows = {r[0]: r[1:] for r in registry.health_records()}
    assert rows["a"] == (True, "healthy", 10.0, {"rssi": -50})
    assert rows["b"] == (True, "degraded", 11.0, {"rssi": -90})
    assert rows["c"] == (False, None, 12.0, None)
    assert "new-one" not in rows  # health alone registers nobody


def test_concurrent_shadow_and_ingest_flushes_never_deadlock(db_url: str) -> None:
    # Two workers' flushes over the same devices, in opposite arrival orders: a shadow
    # batch mirrors reported state into device rows while an ingest flush updates
    # presence and health. PostgreSQL aborted one of them as a deadlock until every
    # writer locked device rows in id order, in one pass.
    reg = Registry.open(db_url)
    ids = [f"d{i:03d}" for i in range(40)]
    reg.add_devices([NewDevice(id=i) for i in ids])

    def shadows() -> None:
        for n in range(30):
            order = ids if n % 2 else ids[::-1]
            reg.save_shadows([(d, "", n + 1, {"version": n + 1}) for d in order],
                             {d: {"firmware_version": "2.2.0", "n": n} for d in order})

    def ingest() -> None:
        for n in range(30):
            order = ids[::-1] if n % 2 else ids
            reg.record_ingest([(d, True, float(n)) for d in order[::2]],
                              [(d, "healthy", {"n": n}) for d in order])

    errors = _run_in_threads([shadows, ingest] * 2)
    try:
        assert errors == []
    finally:
        reg.close()
