"""The Device Shadow service over the wire: real mosquitto, real registry (every test
on SQLite and on PostgreSQL), AWS's example documents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fleet_tui.registry.registry import Registry
from fleet_tui.service.topics import Topics
from tests.integration.mosquitto import Mosquitto
from tests.integration.service_harness import peer, running_service, settings_for

T = Topics()
THING = "esp32-000001"


def on(suffix: str, token: str | None = None):
    def pred(topic: str, payload: Any) -> bool:
        return topic.endswith(suffix) and (
            token is None or (isinstance(payload, dict) and payload.get("clientToken") == token)
        )
    return pred


async def test_desired_reported_delta_flow_like_aws(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow(THING, "", "+", "+")]) as dev:
        # AWS docs example: an app sets desired color/power.
        await dev.publish(T.shadow(THING), {"state": {"desired": {"color": "RED", "power": "on"}},
                                            "clientToken": "app-1"})
        _, accepted = await dev.wait_for(on("/update/accepted", "app-1"))
        assert accepted["state"] == {"desired": {"color": "RED", "power": "on"}}
        assert accepted["version"] == 1
        assert set(accepted["metadata"]["desired"]) == {"color", "power"}
        assert "timestamp" in accepted["metadata"]["desired"]["color"]
        _, delta = await dev.wait_for(on("/update/delta"))
        assert delta["state"] == {"color": "RED", "power": "on"} and delta["version"] == 1
        _, docs = await dev.wait_for(on("/update/documents"))
        assert docs["previous"]["version"] == 0 or docs["previous"].get("state") in (None, {})
        assert docs["current"]["state"]["desired"]["color"] == "RED"
        # The device reports exactly the delta: in sync, no new delta.
        await dev.publish(T.shadow(THING), {"state": {"reported": {"color": "RED", "power": "on"}},
                                            "clientToken": "dev-1"})
        _, accepted = await dev.wait_for(on("/update/accepted", "dev-1"))
        assert accepted["version"] == 2
        await dev.publish(T.shadow(THING, op="get"), {"clientToken": "g1"})
        _, got = await dev.wait_for(on("/get/accepted", "g1"))
        assert got["state"]["desired"] == got["state"]["reported"]
        assert "delta" not in got["state"] and got["version"] == 2
        assert len(dev.received("/update/delta")) == 1
        assert svc.shadows.document(THING).in_sync  # type: ignore[union-attr]
        # null deletes; the reported attributes are queryable in the registry.
        await dev.publish(T.shadow(THING), {"state": {"reported": {"power": None}},
                                            "clientToken": "dev-2"})
        await dev.wait_for(on("/update/accepted", "dev-2"))
    assert registry.device_ids(where='color = "RED" and not has(power)') == [THING]


async def test_named_shadows_are_separate_documents(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    async with running_service(settings, registry), \
            peer(mosquitto.url, [T.shadow(THING, "config", "+", "+"),
                                 T.shadow(THING, "", "+", "+")]) as app:
        await app.publish(T.shadow(THING, "config"), {"state": {"desired": {"mode": "eco"}},
                                                      "clientToken": "n1"})
        _, acc = await app.wait_for(on("/name/config/update/accepted", "n1"))
        assert acc["version"] == 1
        await app.publish(T.shadow(THING, op="get"), {"clientToken": "c1"})
        _, rej = await app.wait_for(on("/get/rejected", "c1"))
        assert rej["code"] == 404
        await app.publish(T.shadow(THING, "config", "delete"), {"clientToken": "d1"})
        _, deleted = await app.wait_for(on("/name/config/delete/accepted", "d1"))
        assert deleted["version"] == 1
        await app.publish(T.shadow(THING, "config", "get"), {"clientToken": "g2"})
        _, rej = await app.wait_for(on("/name/config/get/rejected", "g2"))
        assert rej["code"] == 404 and "config" in rej["message"]


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"{not json", 400, ""),
        (b'{"state": "nope", "clientToken": "e1"}', 400, ""),
        (b'{"clientToken": "e1"}', 400, "state"),
        (b'{"state": {"desired": {"a": 1}}, "version": 99, "clientToken": "e1"}', 409,
         "Version conflict"),
        (b'{"state": {"desired": {"big": "' + b"x" * 9000 + b'"}}, "clientToken": "e1"}', 413,
         ""),
        (b'{"state": {"desired": {"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}},'
         b' "clientToken": "e1"}', 400, "nesting"),
        (b'{"state": {"desired": {"a": 1}}, "clientToken": "' + b"t" * 65 + b'"}', 400, ""),
        (b"\xff\xfe{}", 415, ""),
    ],
)
async def test_each_error_code_over_the_wire(
    mosquitto: Mosquitto, registry: Registry, payload: bytes, code: int, fragment: str
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow(THING, "", "update", "+")]) as app:
        await app.publish(T.shadow(THING), {"state": {"reported": {"ok": True}},
                                            "clientToken": "seed"})
        await app.wait_for(on("/update/accepted", "seed"))
        await app.publish(T.shadow(THING), payload)
        _, err = await app.wait_for(on("/update/rejected"))
        assert err["code"] == code and fragment in err["message"]
        assert isinstance(err["timestamp"], int)
        if (b'"clientToken": "e1"' in payload and code != 400) or fragment == "nesting":
            assert err.get("clientToken") == "e1"
        assert svc.shadows.document(THING).version == 1  # type: ignore[union-attr]


async def test_bad_thing_name_is_rejected_on_its_own_topic(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    bad = "bad.thing!"
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow(bad, "", "update", "rejected")]) as app:
        await app.publish(T.shadow(bad), {"state": {"desired": {"a": 1}}, "clientToken": "x"})
        _, err = await app.wait_for(on("/update/rejected"))
        assert err["code"] == 400
        assert svc.shadows.shadows == {}


async def test_more_than_ten_in_flight_requests_get_429(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused", flush_interval_ms=300)
    async with running_service(settings, registry), \
            peer(mosquitto.url, [T.shadow(THING, "", "update", "+")]) as dev:
        for i in range(25):
            await dev.publish(T.shadow(THING), {"state": {"reported": {"n": i}},
                                                "clientToken": f"r{i}"}, qos=0)
        await dev.wait_for(lambda t, p: len(dev.received("/accepted"))
                           + len(dev.received("/rejected")) >= 25, timeout=10)
        codes = [p["code"] for p in dev.received("/update/rejected")]
        assert codes and set(codes) == {429}
        accepted = dev.received("/update/accepted")
        assert 1 <= len(accepted) <= 10 * 3  # at most 10 per batch window
        versions = [p["version"] for p in accepted]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)


async def test_two_concurrent_writers_one_wins_the_other_gets_409(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    settings = settings_for(mosquitto.url, "unused")
    async with running_service(settings, registry), \
            peer(mosquitto.url, [T.shadow(THING, "", "+", "+")]) as a, \
            peer(mosquitto.url, [T.shadow(THING, "", "+", "+")]) as b:
        await a.publish(T.shadow(THING), {"state": {"desired": {"led": False}},
                                          "clientToken": "init"})
        await a.wait_for(on("/update/accepted", "init"))
        wins = conflicts = 0
        for round_ in range(20):
            await a.publish(T.shadow(THING, op="get"), {"clientToken": f"g{round_}"})
            _, got = await a.wait_for(on("/get/accepted", f"g{round_}"))
            version = got["version"]
            await asyncio.gather(
                a.publish(T.shadow(THING), {"state": {"desired": {"led": True, "by": "a"}},
                                            "version": version, "clientToken": f"a{round_}"}),
                b.publish(T.shadow(THING), {"state": {"desired": {"led": True, "by": "b"}},
                                            "version": version, "clientToken": f"b{round_}"}),
            )
            _, ra = await a.wait_for(lambda t, p, r=round_: isinstance(p, dict)
                                     and p.get("clientToken") == f"a{r}")
            _, rb = await b.wait_for(lambda t, p, r=round_: isinstance(p, dict)
                                     and p.get("clientToken") == f"b{r}")
            outcomes = sorted([ra.get("code", 200), rb.get("code", 200)])
            assert outcomes == [200, 409], (ra, rb)
            wins += 1
            conflicts += 1
        assert wins == conflicts == 20


async def test_restart_brings_back_every_document_with_its_version(
    mosquitto: Mosquitto, db_url: str
) -> None:
    registry = Registry.open(db_url)
    settings = settings_for(mosquitto.url, db_url)
    async with running_service(settings, registry), \
            peer(mosquitto.url, [T.shadow("+", "", "update", "accepted")]) as dev:
        for i in range(30):
            await dev.publish(T.shadow(f"dev-{i % 5}"), {"state": {"reported": {"n": i}},
                                                         "clientToken": f"t{i}"})
        await dev.wait_for(lambda t, p: len(dev.received("/accepted")) == 30, timeout=10)
    registry.close()
    again = Registry.open(db_url)
    async with running_service(settings, again) as svc:
        for i in range(5):
            doc = svc.shadows.document(f"dev-{i}")
            assert doc is not None and doc.version == 6
            assert doc.reported["n"] == 25 + i
    again.close()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_service_speaks_mqtt_5_or_3_1_1_as_configured(
    mosquitto: Mosquitto, registry: Registry, version: str
) -> None:
    import aiomqtt

    settings = settings_for(mosquitto.url, "unused")
    settings.mqtt_version = version
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow(THING, "", "+", "+")]) as dev:
        expected = aiomqtt.ProtocolVersion.V5 if version == "5" else aiomqtt.ProtocolVersion.V311
        assert svc.session.protocol == expected
        await dev.publish(T.shadow(THING), {"state": {"reported": {"led_is_on": True}},
                                            "clientToken": "v-1"})
        _, accepted = await dev.wait_for(on("/update/accepted", "v-1"))
        assert accepted["version"] == 1


async def test_a_burst_commits_in_sealed_batches_answered_in_order(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    """A burst larger than ``max_batch_docs`` (a fan-out's desired writes) commits in steps,
    each step answered while the next commits: every delta goes out once its document is
    stored, one thing's successive versions in order across the batches."""
    settings = settings_for(mosquitto.url, "unused", max_batch_docs=50)
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow("+", "", "update", "delta")]) as dev:
        batches = svc.shadows.stats["batches"]
        for i in range(400):
            svc.shadows.handle_internal(f"burst-{i:03d}", {
                "state": {"desired": {"target_version": "2.4.1", "n": i}},
                "clientToken": f"engine-{i}"})
            if i % 40 == 0:  # one thing written again and again, across the batches
                svc.shadows.handle_internal("burst-again", {
                    "state": {"desired": {"n": i}}, "clientToken": f"again-{i}"})
        await dev.wait_for(lambda t, p: len(dev.received("/delta")) == 410, timeout=30)
        assert svc.shadows.stats["batches"] - batches >= 8
        again = [p for t, p in dev.inbox if "/burst-again/" in t]
        assert [p["state"]["n"] for p in again] == list(range(0, 400, 40))
        assert [p["version"] for p in again] == list(range(1, 11))
        for i in (0, 199, 399):
            stored = registry.get_shadow(f"burst-{i:03d}")
            assert stored is not None and stored["state"]["desired"]["n"] == i
        stored = registry.get_shadow("burst-again")
        assert stored is not None and stored["version"] == 10


async def test_a_deleted_shadows_mirror_is_cleared_by_the_next_desired_write(
    mosquitto: Mosquitto, registry: Registry
) -> None:
    """Desired-only writes leave the registry's mirror of reported state alone, except the
    first write after a delete: the deleted document's reported attributes go."""
    settings = settings_for(mosquitto.url, "unused")
    async with running_service(settings, registry), \
            peer(mosquitto.url, [T.shadow(THING, "", "+", "+")]) as dev:
        await dev.publish(T.shadow(THING), {"state": {"reported": {"color": "RED"}},
                                            "clientToken": "r1"})
        await dev.wait_for(on("/update/accepted", "r1"))
        await dev.publish(T.shadow(THING), {"state": {"desired": {"color": "BLUE"}},
                                            "clientToken": "d1"})
        await dev.wait_for(on("/update/accepted", "d1"))
        assert registry.device_ids(where='color = "RED"') == [THING]
        await dev.publish(T.shadow(THING, op="delete"), {"clientToken": "x1"})
        await dev.wait_for(on("/delete/accepted", "x1"))
        await dev.publish(T.shadow(THING), {"state": {"desired": {"color": "GREEN"}},
                                            "clientToken": "d2"})
        await dev.wait_for(on("/update/accepted", "d2"))
    assert registry.device_ids(where="has(color)") == []


async def test_a_failed_commit_undoes_its_batch_and_every_later_one(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A batch that cannot commit (here a trigger refuses one of its rows) takes the
    batches applied after it in memory down too: nothing is answered accepted that is not
    stored, each such request gets a 500, and memory matches the registry again."""
    registry = Registry.open(f"sqlite:///{tmp_path / 'fail.db'}")
    with registry.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON shadow WHEN NEW.thing_id = 'burst-010' "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    settings = settings_for(mosquitto.url, "unused", max_batch_docs=50)
    async with running_service(settings, registry) as svc, \
            peer(mosquitto.url, [T.shadow("+", "", "update", "+")]) as dev:
        for i in range(120):  # three batches: the first fails, two were applied after it
            svc.shadows.handle_internal(f"burst-{i:03d}", {
                "state": {"desired": {"n": i}}, "clientToken": f"engine-{i}"})
            if i % 40 == 0:  # a thing in each batch, on top of its own earlier write
                svc.shadows.handle_internal("burst-again", {
                    "state": {"desired": {"n": i}}, "clientToken": f"again-{i}"})
        await dev.wait_for(lambda t, p: len(dev.received("/rejected")) == 123, timeout=30)
        await asyncio.sleep(0.5)
        assert {p["code"] for p in dev.received("/rejected")} == {500}
        assert dev.received("/accepted") == [] and dev.received("/delta") == []
        assert svc.shadows.stats["failed_batches"] == 3
        for thing in [f"burst-{i:03d}" for i in range(120)] + ["burst-again"]:
            assert svc.shadows.document(thing) is None
            assert registry.get_shadow(thing) is None
        # The store works again: the next write is stored and answered.
        with registry.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse")
        svc.shadows.handle_internal("burst-010", {"state": {"desired": {"n": 10}},
                                                  "clientToken": "engine-again"})
        _, accepted = await dev.wait_for(on("/update/accepted", "engine-again"))
        assert accepted["version"] == 1
        stored = registry.get_shadow("burst-010")
        assert stored is not None and stored["version"] == 1
    registry.close()
