"""Bad thing names arriving over the real broker are refused by the service at the edge:
shadow requests get a 400 on their own /rejected topic, presence/telemetry are counted and
dropped, and nothing is stored under the bad name (on SQLite and PostgreSQL, whose
varchar(128) would refuse the longest)."""

from __future__ import annotations

from typing import Any

import pytest

from fleet_tui.registry.registry import Registry
from fleet_tui.service.topics import Topics
from tests.integration.mosquitto import Mosquitto
from tests.integration.service_harness import peer, running_service, settings_for

T = Topics()


# Control characters ("dev-a\n") never get this far: mosquitto drops a client whose topic
# holds one (the unit tests cover the service's own check for brokers that do not).
@pytest.mark.parametrize("thing", ["dév", "x" * 129, "a b", "dev:a;drop"])
async def test_shadow_request_for_a_bad_thing_name_is_rejected_400(
        mosquitto: Mosquitto, thing: str, db_url: str) -> None:
    db = db_url
    registry = Registry.open(db)
    settings = settings_for(mosquitto.url, db)
    rejected = T.shadow(thing, suffix="rejected")
    ok = T.shadow("dev-ok", suffix="accepted")
    async with running_service(settings, registry) as service, \
            peer(mosquitto.url, [rejected, ok]) as app:
        await app.publish(T.shadow(thing), {"state": {"desired": {"x": 1}}, "clientToken": "t"})

        def is_400(topic: str, data: Any) -> bool:
            return topic == rejected and data["code"] == 400

        await app.wait_for(is_400)
        await app.publish(T.presence(thing), {"state": "online"})
        await app.publish(T.telemetry(thing), {"ts": 1, "uptime_s": 1})
        await app.publish(T.shadow("dev-ok"), {"state": {"reported": {"x": 1}}})
        await app.wait_for(lambda t, d: t == ok)  # one connection: in order, so all seen
        assert service.shadows.document(thing) is None
        assert service.shadows.document(thing.strip()) is None
    registry.close()
    assert service.stats()["ignored_topics"] == 2
