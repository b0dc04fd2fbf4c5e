"""Input hardening at the edge: thing names, shadow names and topic segments are checked
before anything is built from them, with a clear code (400) or a named field."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from fleet_tui.config import Settings
from fleet_tui.registry.errors import FleetImportError
from fleet_tui.registry.importer import read_devices
from fleet_tui.service.broker_acl import AclError, mosquitto_acl
from fleet_tui.service.client import ServiceError, ShadowClient
from fleet_tui.service.topics import Topics, valid_shadow_name, valid_thing

BAD_NAMES = ["", "a+b", "a#", "#", "+", "a/b", "a\x00b", "x" * 129, "dév", "a b",
             "dev-a\n", "\u202edev", "😀", "a\tb", "$aws"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_thing_and_shadow_names_are_invalid(name: str) -> None:
    assert not valid_thing(name)
    if name:  # "" is the classic shadow
        assert not valid_shadow_name(name)


@pytest.mark.parametrize("name", ["dev-1", "A:b_c-9", "x" * 128])
def test_aws_thing_names_are_valid(name: str) -> None:
    assert valid_thing(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_cli_client_refuses_bad_names_with_400_before_connecting(name: str) -> None:
    client = ShadowClient(Settings(broker="127.0.0.1:1"), timeout=0.5)  # nothing listens
    with pytest.raises(ServiceError) as err:
        asyncio.run(client.get(name))
    assert err.value.code == 400
    with pytest.raises(ServiceError) as err:
        asyncio.run(client.get("dev-1", name="bad/name"))
    assert err.value.code == 400


def test_extra_topic_segments_never_resolve_to_a_shorter_thing() -> None:
    t = Topics()
    assert t.parse_shadow("$aws/things/a/b/shadow/update") is None
    assert t.parse_fleet("fleet/a/b/presence") is None
    assert t.parse_jobs("$aws/things/a/x/jobs/get") is None
    parsed = t.parse_shadow("$aws/things/a+b/shadow/update")
    assert parsed is not None and not valid_thing(parsed.thing)  # returned, then refused


def _import_rows(tmp_path: Path, *rows: dict[str, object]) -> None:
    path = tmp_path / "devices.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    list(read_devices(path))


@pytest.mark.parametrize("bad", ["dev\n", "a/b", "dév", "x" * 129, "a+"])
def test_importer_names_the_field_of_a_bad_device_id(bad: str, tmp_path: Path) -> None:
    with pytest.raises(FleetImportError, match="id"):
        _import_rows(tmp_path, {"id": bad, "hardware_rev": "rev-a"})


def test_importer_refuses_tag_keys_with_a_trailing_newline(tmp_path: Path) -> None:
    with pytest.raises(FleetImportError, match="tags"):
        _import_rows(tmp_path, {"id": "dev-1", "hardware_rev": "rev-a",
                                "tags": {"ring\n": "x"}})


@pytest.mark.parametrize("user", ["a b", "a/b", "#", "+", "x\ny", ""])
def test_acl_generator_refuses_names_that_would_break_the_acl(user: str) -> None:
    with pytest.raises(AclError):
        mosquitto_acl(Topics(), service_user=user)
    with pytest.raises(AclError):
        mosquitto_acl(Topics(), app_users=[user])
    with pytest.raises(AclError):
        mosquitto_acl(Topics(), devices=[user or "a\x00"])
