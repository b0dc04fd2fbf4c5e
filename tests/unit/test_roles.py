"""Operator roles: the pure policy, the Settings helpers, and the CLI refusing what the
role does not allow (before any broker or registry is touched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_tui import cli
from fleet_tui.config import PermissionDenied, Settings, load_settings
from fleet_tui.domain import roles
from fleet_tui.domain.roles import ACTIONS, RoleError, allows, minimum_role, require


def test_viewer_may_only_view() -> None:
    assert [a for a in sorted(ACTIONS) if allows("viewer", a)] == ["view"]


def test_operator_edits_and_runs_jobs_but_does_not_approve() -> None:
    for action in (roles.EDIT_DESIRED, roles.CREATE_JOB, roles.CANCEL_JOB,
                   roles.START_ROLLOUT, roles.HALT_ROLLOUT):
        assert allows("operator", action)
    assert not allows("operator", roles.APPROVE_ROLLOUT)
    assert not allows("operator", roles.ROLLBACK_ROLLOUT)


def test_roles_are_cumulative_and_approver_may_do_everything() -> None:
    for lower, higher in (("viewer", "operator"), ("operator", "approver")):
        assert roles.PERMISSIONS[lower] < roles.PERMISSIONS[higher]
    assert roles.PERMISSIONS["approver"] == ACTIONS


def test_halting_never_needs_an_approver() -> None:
    assert minimum_role(roles.HALT_ROLLOUT) == "operator"
    assert minimum_role(roles.APPROVE_ROLLOUT) == "approver"


def test_refusal_names_role_action_and_needed_role() -> None:
    needs = r"'operator' may not approve rollout \(needs 'approver'\)"
    with pytest.raises(RoleError, match=needs) as err:
        require("operator", roles.APPROVE_ROLLOUT)
    assert err.value.code == 403


def test_unknown_role_or_action_is_an_error_not_a_silent_answer() -> None:
    with pytest.raises(RoleError) as err:
        require("root", roles.VIEW)
    assert err.value.code == 400
    with pytest.raises(RoleError, match="unknown action"):
        allows("approver", "aprove_rollout")
    assert not allows("root", roles.VIEW)


def test_settings_read_only_overrides_the_role_and_is_in_the_audit_fields() -> None:
    s = Settings(role="approver", operator="ana")
    assert s.allows("approve_rollout")
    assert s.audit_fields() == {"actor": "ana", "role": "approver"}
    s.read_only = True
    assert s.allows("view") and not s.allows("edit_desired")
    with pytest.raises(PermissionDenied, match="read-only"):
        s.require("approve_rollout")
    assert s.audit_fields() == {"actor": "ana", "role": "viewer"}


def test_viewer_role_from_config_implies_read_only(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TUI_ROLE", "viewer")
    assert load_settings(tmp_path / "none.toml").read_only


@pytest.mark.parametrize("argv", [
    ["shadow", "set", "dev-1", "led_is_on=true"],
    ["groups", "create", "g1", "--members", "a"],
    ["groups", "delete", "g1"],
    ["import", "sample_data"],
])
def test_cli_refuses_mutations_for_a_viewer(argv: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert cli.main(["--db", db, "--role", "viewer", *argv]) == 2
    assert "role 'viewer' may not" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()  # refused before the registry was opened
