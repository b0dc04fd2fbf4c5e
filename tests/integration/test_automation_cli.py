"""The schedule, window, policy and alerts CLI on real SQLite and PostgreSQL registries
with the sample fleet; `fleet-tui api` refuses to start without tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_tui.cli import main
from tests.conftest import SAMPLE_DATA

POLICIES = SAMPLE_DATA / "policies.toml"


@pytest.fixture(scope="module")
def sample_db(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample fleet, imported once per module and backend (each test below touches its
    own kind of object: schedules, windows or policies)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_TUI_CONFIG", str(tmp_path_factory.mktemp("cli") / "none.toml"))
        assert main(["--db", module_db_url, "import", str(SAMPLE_DATA)]) == 0
    return module_db_url


@pytest.fixture
def db(sample_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("FLEET_TUI_OPERATOR", "olga")
    monkeypatch.setenv("FLEET_TUI_ROLE", "operator")
    return sample_db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedules(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--db", db, "schedule", "create", "job", "--type",
                         "diagnostic", "--group", "lab-bench", "--cron", "0 2 * * *", "--tz",
                         "Europe/Berlin", "--id", "nightly")
    assert code == 0, err
    assert "schedule nightly: next run" in out
    code, out, err = run(capsys, "--db", db, "schedule", "create", "job", "--group",
                         "lab-bench", "--cron", "0 99 * * *")
    assert code == 2 and "cron '0 99 * * *'" in err
    code, out, _ = run(capsys, "--db", db, "schedule", "list", "--format", "json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == ["nightly"] and rows[0]["timezone"] == "Europe/Berlin"
    assert run(capsys, "--db", db, "schedule", "delete", "nightly")[0] == 0
    code, _, err = run(capsys, "--db", db, "schedule", "delete", "nightly")
    assert code == 2 and "no schedule 'nightly'" in err


def test_windows(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--db", db, "window", "set", "lab-bench",
                         "Mon-Fri 01:00-04:00 Europe/Berlin")
    assert code == 0, err
    assert "lab-bench: maintenance window Mon-Fri 01:00-04:00 Europe/Berlin" in out
    code, _, err = run(capsys, "--db", db, "window", "set", "lab-bench", "weekdays 1-4")
    assert code == 2 and "expected DAYS HH:MM-HH:MM" in err
    code, _, err = run(capsys, "--db", db, "window", "set", "nope", "daily 01:00-02:00")
    assert code == 2 and "no group 'nope'" in err
    code, out, _ = run(capsys, "--db", db, "window", "list", "--format", "json")
    assert [w["group"] for w in json.loads(out)] == ["lab-bench"]


def test_policies_and_alerts(db: str, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "--db", db, "policy", "load", str(POLICIES))
    assert code == 2 and "rollback" in err  # the file rolls back: an operator may not
    monkeypatch.setenv("FLEET_TUI_ROLE", "approver")
    code, out, err = run(capsys, "--db", db, "policy", "load", str(POLICIES))
    assert code == 0, err
    assert "loaded 4 policies" in out
    assert run(capsys, "--db", db, "policy", "disable", "diagnose-unhealthy")[0] == 0
    code, out, _ = run(capsys, "--db", db, "policy", "list", "--format", "json")
    state = {p["name"]: (p["enabled"], p["dry_run"]) for p in json.loads(out)}
    assert state["diagnose-unhealthy"] == (False, False) and state["hot-devices"] == (True,
                                                                                    True)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[policy]]\nname = 'x'\n")
    code, _, err = run(capsys, "--db", db, "policy", "load", str(bad))
    assert code == 2 and "policy #1" in err and "'when'" in err
    code, out, _ = run(capsys, "--db", db, "alerts", "list", "--format", "json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "--db", db, "alerts", "counts", "--format", "json")
    assert json.loads(out)["open_by_severity"] == {"critical": 0, "warning": 0, "info": 0}
    monkeypatch.setenv("FLEET_TUI_ROLE", "viewer")
    code, _, err = run(capsys, "--db", db, "policy", "enable", "diagnose-unhealthy")
    assert code == 2 and "may not" in err


def test_api_needs_a_token(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--db", db, "api", "--listen", "127.0.0.1:0")
    assert code == 2 and "no API tokens" in err
    code, _, err = run(capsys, "--db", db, "api", "--token", "short=olga:operator")
    assert code == 2 and "at least 16 characters" in err
