"""The scriptable CLI end to end (real SQLite and PostgreSQL registries, real sample fleet)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_tui.cli import main
from tests.conftest import SAMPLE_DATA


@pytest.fixture(scope="module")
def sample_db(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample fleet, imported once per module and backend; the tests below add a group
    at most, which no other test counts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_TUI_CONFIG", str(tmp_path_factory.mktemp("cli") / "none.toml"))
        assert main(["--db", module_db_url, "import", str(SAMPLE_DATA)]) == 0
    return module_db_url


@pytest.fixture
def db(sample_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    return sample_db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_devices_list_formats_and_count(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code, out, _ = run(capsys, "--db", db, "devices", "list", "-g", "lab-bench", "-o", "json")
    assert code == 0 and len(json.loads(out)) == 8
    code, out, _ = run(capsys, "--db", db, "devices", "list", "-w", 'hardware_rev = "rev-c"',
                       "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and all(r["hardware_rev"] == "rev-c" for r in rows)
    code, out, _ = run(capsys, "--db", db, "devices", "list", "-w", 'hardware_rev = "rev-c"',
                       "--count")
    assert int(out) == len(rows)
    code, out, _ = run(capsys, "--db", db, "devices", "list", "--limit", "3")
    assert out.splitlines()[0].split()[:3] == ["ID", "HARDWARE_REV", "FIRMWARE_VERSION"]
    assert len(out.splitlines()) == 4


def test_groups_create_and_tree(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code, out, _ = run(capsys, "--db", db, "groups", "create", "old-fra", "--parent", "fra-1",
                       "--where", "firmware_version < 2.1.0")
    assert code == 0 and "created dynamic group 'old-fra'" in out
    code, out, _ = run(capsys, "--db", db, "groups", "tree")
    lines = out.splitlines()
    fra = next(i for i, line in enumerate(lines) if line.strip().startswith("▸ fra-1 "))
    assert any("old-fra" in line for line in lines[fra:fra + 6])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["devices", "list", "-w", "firmware_version <"], "col 19: expected a value after '<'"),
        (["devices", "list", "-w", 'locaton = "x"'], "did you mean 'location'"),
        (["devices", "list", "-g", "nope"], "no group 'nope'"),
        (["groups", "move", "eu-central", "--parent", "fra-1-l1"], "own ancestor"),
        (["import", "/does/not/exist"], "no such file or directory"),
        (["devices", "list", "--sort", "colour"], "cannot sort by 'colour'"),
    ],
)
def test_user_mistakes_exit_2_with_a_message_and_no_traceback(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    capsys.readouterr()
    code, _, err = run(capsys, "--db", db, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("fleet-tui: error: ")


def test_no_subcommand_seeds_an_empty_registry_and_opens_the_console(tmp_path: Path,
                                                                   db_url: str) -> None:
    env = {"FLEET_TUI_DB": db_url,
           "FLEET_TUI_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "fleet_tui.cli", "groups", "tree"],
                          capture_output=True, text=True, env=env, check=True)
    assert "fleet: 0 devices" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fleet_tui.cli", "--no-service", "--headless",
                           "--exit-after", "0.5"],
                          capture_output=True, text=True, env=env, check=True, timeout=60)
    assert "seeded" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fleet_tui.cli", "groups", "tree"],
                          capture_output=True, text=True, env=env, check=True)
    assert "fleet: 2000 devices" in proc.stdout


def test_sample_generate_is_deterministic(tmp_path: Path) -> None:
    assert main(["sample", "generate", "-n", "500", "--seed", "3", "--out",
                 str(tmp_path / "a"), "--no-images"]) == 0
    assert main(["sample", "generate", "-n", "500", "--seed", "3", "--out",
                 str(tmp_path / "b"), "--no-images"]) == 0
    a = (tmp_path / "a" / "devices.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "devices.jsonl").read_bytes()
    assert len(a.splitlines()) == 500
    shipped = (SAMPLE_DATA / "devices.jsonl").read_bytes()
    main(["sample", "generate", "-n", "2000", "--seed", "7", "--out", str(tmp_path / "c"),
          "--no-images"])
    assert (tmp_path / "c" / "devices.jsonl").read_bytes() == shipped
