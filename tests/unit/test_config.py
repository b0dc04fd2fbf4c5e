"""Settings: defaults < config file < environment < flags, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_tui.config import ConfigError, load_settings, parse_broker


def test_precedence_defaults_file_env_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in ("FLEET_TUI_DB", "FLEET_TUI_BROKER", "FLEET_TUI_SHADOW_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    assert load_settings(tmp_path / "none.toml").db == (
        f"sqlite:///{tmp_path / 'data' / 'fleet-tui' / 'fleet.db'}"
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text('broker = "file:1"\nshadow_prefix = "things"\n[shadow]\nmax_depth = 4\n')
    s = load_settings(cfg)
    assert (s.broker, s.shadow_prefix, s.shadow.max_depth) == ("file:1", "things", 4)
    monkeypatch.setenv("FLEET_TUI_BROKER", "env:2")
    assert load_settings(cfg).broker == "env:2"
    assert load_settings(cfg, {"broker": "flag:3", "db": None}).broker == "flag:3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('broker = "x:1"\n[shadow]\nmax_depth = "deep"\n', ":3: shadow.max_depth: expected int"),
        ("colour = 3\n", ":1: unknown setting 'colour'"),
        ('broker = "unterminated\n', "at line 1"),
        ("shadow = 5\n", ":1: [shadow] must be a table"),
        ('role = "god"\n', "role 'god': expected one of viewer, operator, approver"),
        ('broker = "nohost:port"\n', "expected HOST:PORT"),
    ],
)
def test_bad_config_names_path_and_line(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert message in str(info.value)
    if ":" in message[:3]:
        assert str(cfg) in str(info.value)


def test_read_only_forces_the_viewer_role(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "none", {"read_only": True}).role == "viewer"


def test_parse_broker() -> None:
    assert parse_broker("mqtt://h:1884") == ("h", 1884)
    assert parse_broker("h") == ("h", 1883)
    with pytest.raises(ConfigError):
        parse_broker("h:99999")


def test_tls_and_auth_from_file_env_and_mqtts(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FLEET_TUI_TLS_CA", "FLEET_TUI_TLS_INSECURE", "FLEET_TUI_MQTT_PASSWORD",
                "FLEET_TUI_BROKER"):
        monkeypatch.delenv(var, raising=False)
    assert not load_settings(tmp_path / "none.toml").tls_enabled
    cfg = tmp_path / "config.toml"
    cfg.write_text('[tls]\nca_file = "/etc/ca.pem"\n[auth]\nusername = "fleet-service"\n')
    s = load_settings(cfg)
    assert s.tls_enabled and s.tls.ca_file == "/etc/ca.pem" and not s.tls.insecure
    assert s.mqtt_credentials() == ("fleet-service", None)
    monkeypatch.setenv("FLEET_TUI_TLS_CA", "/env/ca.pem")
    monkeypatch.setenv("FLEET_TUI_TLS_INSECURE", "yes")
    monkeypatch.setenv("FLEET_TUI_MQTT_PASSWORD", "s3cret")
    s = load_settings(cfg)
    assert (s.tls.ca_file, s.tls.insecure) == ("/env/ca.pem", True)
    assert s.mqtt_credentials() == ("fleet-service", "s3cret")
    assert parse_broker("mqtts://broker.example") == ("broker.example", 8883)
    s = load_settings(tmp_path / "none.toml", {"broker": "mqtts://b:8884"})
    assert s.tls_enabled and s.broker_port == 8884


def test_bad_tls_setting_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[tls]\ninsecure = "maybe"\n')
    with pytest.raises(ConfigError, match=r":2: tls\.insecure: expected bool"):
        load_settings(cfg)
    cfg.write_text('[tls]\nca = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting 'tls\.ca'"):
        load_settings(cfg)
