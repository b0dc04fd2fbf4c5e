"""The broker ACL generator: fixed size for any fleet (patterns), prefixes from the
settings, least privilege per device, and the dynamic-security form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_tui import cli
from fleet_tui.service.broker_acl import (
    DEVICE_ROLE,
    AclError,
    device_grants,
    dynsec_commands,
    mosquitto_acl,
)
from fleet_tui.service.topics import Topics
from tests.conftest import SAMPLE_DATA


def test_pattern_acl_has_no_line_per_device_and_uses_the_user_name() -> None:
    text = mosquitto_acl(Topics())
    patterns = [line for line in text.splitlines() if line.startswith("pattern ")]
    assert patterns and all("/%u/" in line for line in patterns)
    assert "%c" not in text  # client ids are not authenticated
    assert "user fleet-service\ntopic readwrite $aws/things/#\ntopic readwrite fleet/#" in text


def test_device_may_not_publish_answers_or_documents() -> None:
    writes = {g.topic for g in device_grants(Topics(), "dev-a") if g.access == "write"}
    assert "$aws/things/dev-a/shadow/update" in writes
    assert not [t for t in writes if t.endswith(("accepted", "rejected", "delta", "documents"))]
    assert not [t for t in writes if "#" in t or t.startswith("$aws/things/+")]


def test_prefixes_come_from_the_settings() -> None:
    text = mosquitto_acl(Topics("things", "fl"))
    assert "pattern write things/%u/shadow/update" in text
    assert "pattern write fl/%u/telemetry" in text and "$aws" not in text


def test_explicit_device_blocks_for_listed_devices() -> None:
    text = mosquitto_acl(Topics(), devices=["dev-a", "dev-b"])
    assert "user dev-a\ntopic write $aws/things/dev-a/shadow/update" in text
    assert "pattern" not in text.split("user dev-a")[1]


def test_dynsec_default_deny_and_a_role_per_device_with_its_own_topics() -> None:
    doc = dynsec_commands(Topics(), app_users=["console"], devices=["dev-a"])
    cmds = doc["commands"]
    assert cmds[0]["command"] == "setDefaultACLAccess"
    assert all(a["allow"] is False for a in cmds[0]["acls"])
    role = next(c for c in cmds if c.get("rolename") == f"{DEVICE_ROLE}-dev-a")
    assert all("/dev-a/" in a["topic"] for a in role["acls"])
    assert {"command": "createClient", "username": "dev-a",
            "roles": [{"rolename": f"{DEVICE_ROLE}-dev-a"}]} in cmds


def test_dynsec_without_a_device_list_is_refused_with_the_reason() -> None:
    with pytest.raises(AclError, match="does not substitute %u"):
        dynsec_commands(Topics())


def test_cli_writes_the_acl_with_the_configured_prefix(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("FLEET_TUI_SHADOW_PREFIX", "things")
    out = tmp_path / "acl"
    assert cli.main(["broker", "acl", "-o", str(out), "--app-user", "console"]) == 0
    assert "user console" in out.read_text()
    assert "pattern write things/%u/shadow/update" in out.read_text()
    assert cli.main(["broker", "acl", "--format", "dynsec", "-o", str(out)]) == 2
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert cli.main(["--db", db, "import", str(SAMPLE_DATA)]) == 0
    assert cli.main(["--db", db, "broker", "acl", "--format", "dynsec",
                     "--devices-from-registry", "-o", str(out)]) == 0
    clients = [c for c in json.loads(out.read_text())["commands"]
               if c["command"] == "createClient"]
    assert len(clients) > 100
    assert cli.main(["broker", "acl", "--service-user", "bad user"]) == 2
