"""The one settings object: defaults < TOML config file < environment < command-line flags.

The config file lives at ``$XDG_CONFIG_HOME/fleet-tui/config.toml`` (or ``FLEET_TUI_CONFIG``).
Every component (service, simulator, console, CLI) reads the topic prefixes and limits from
here, so e.g. switching the shadow prefix for a broker that refuses ``$`` topics is one line.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import ssl
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

APP = "fleet-tui"


class ConfigError(ValueError):
    """A bad config file or value; the message names the file, line and key."""


def xdg_dir(kind: str, fallback: str) -> Path:
    base = os.environ.get(f"XDG_{kind}_HOME") or str(Path.home() / fallback)
    return Path(base) / APP


def default_db_url() -> str:
    return f"sqlite:///{xdg_dir('DATA', '.local/share') / 'fleet.db'}"


def _default_operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return "operator"


@dataclass
class ShadowSettings:
    max_state_bytes: int = 8192
    max_depth: int = 6
    max_client_token: int = 64
    max_payload_bytes: int = 128 * 1024
    max_inflight_per_client: int = 10
    prune_converged_desired: bool = False
    # How long the service may hold accepted-but-unwritten documents (write-behind batch).
    flush_interval_ms: int = 20
    # A batch is sealed at this many documents and the next one opens: a large burst (a
    # fan-out's 100k desired writes) commits in steps, each step's answers going out
    # while the next commits, instead of all of them after one long commit.
    max_batch_docs: int = 5000
    # Scale-out (docs/scale-out.md): things split into this many partitions by a stable
    # hash of the thing name, each answered by the worker holding its lease; 0 = one
    # worker answers everything (no partition leases).
    partitions: int = 0
    # A dead worker's partitions move this long after its last renewal.
    partition_lease_ttl_s: float = 6.0


@dataclass
class HealthSettings:
    telemetry_interval_s: float = 60.0
    gone_dark_intervals: int = 3
    heap_free_degraded: int = 40_000
    heap_free_unhealthy: int = 15_000
    rssi_degraded: int = -80
    rssi_unhealthy: int = -90
    cpu_pct_degraded: float = 85.0
    cpu_pct_unhealthy: float = 95.0
    temp_c_degraded: float = 70.0
    temp_c_unhealthy: float = 85.0
    errors_degraded: int = 5
    errors_unhealthy: int = 20
    bucket_minute_retention_h: int = 24
    bucket_hour_retention_d: int = 30


@dataclass
class JobsSettings:
    # The engine's decision loop: releases, timeouts, gates (seconds).
    tick_s: float = 1.0
    # The engine lease: a second `serve` takes over this long after the holder died.
    lease_ttl_s: float = 15.0
    # Relative release URLs (sample_data/releases.json) are resolved against this.
    firmware_base_url: str = ""
    # Run the job/rollout engine in `serve` (off: shadows and telemetry only).
    engine: bool = True
    # Executions released per tick at most; a larger release goes on in the next tick at
    # once, so the first devices hear within a tick and publishing overlaps the next SQL.
    max_release_per_tick: int = 5000
    # A firmware execution whose desired OTA state is not in its device's shadow this long
    # after it was written (the write died with a killed worker or engine), or whose online
    # device shows no sign of it (its delta died), gets the desired state written again,
    # at most three times. 0: never.
    redrive_s: float = 10.0


@dataclass
class AutomationSettings:
    # Policies loaded (and reloaded when changed) by the engine; "" for none.
    policies_file: str = ""
    # How often policies and the alert health rules are evaluated (seconds).
    evaluate_s: float = 10.0
    # A group whose offline share exceeds this raises an offline_spike alert.
    offline_spike_share: float = 0.2
    # Alerts seen within this many seconds count as a group's recent_alerts.
    recent_alerts_s: float = 86400.0
    # Raised and resolved alerts are POSTed here as JSON; "" for none.
    webhook_url: str = ""
    # Fleet HTTP API bearer tokens: token = "OPERATOR:ROLE" (role viewer|operator|approver).
    api_tokens: dict[str, str] = field(default_factory=dict)


@dataclass
class TlsSettings:
    """TLS to the broker. The server certificate chain is always verified (against
    ``ca_file``, or the system CAs for ``mqtts://`` without one); ``insecure`` only skips
    the host name check, as mosquitto's ``--insecure`` and paho's ``tls_insecure_set`` do.
    ``cert_file``/``key_file`` are this client's certificate (devices, or the service
    when the broker maps certificate CNs to user names)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False


@dataclass
class AuthSettings:
    """MQTT user name and password (mosquitto ``password_file`` / dynamic security).
    Prefer the ``FLEET_TUI_MQTT_PASSWORD`` env var to a password in the config file."""

    username: str = ""
    password: str = ""


@dataclass
class Settings:
    db: str = field(default_factory=default_db_url)
    broker: str = "127.0.0.1:1883"
    shadow_prefix: str = "$aws/things"
    fleet_prefix: str = "fleet"
    operator: str = field(default_factory=_default_operator)
    role: str = "approver"
    read_only: bool = False
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    keymap: dict[str, str] = field(default_factory=dict)
    # The service's MQTT client id (default fleet-tui-service-HOSTNAME; give each worker
    # its own) and how long the broker keeps its session (and queued requests) after it
    # drops: requests sent during a restart are delivered when it is back.
    service_id: str = ""
    session_expiry_s: int = 3600
    # The service's MQTT version: "3.1.1" (default, measured faster with paho) or "5".
    mqtt_version: str = "3.1.1"
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    config_path: Path | None = None

    @property
    def broker_host(self) -> str:
        return parse_broker(self.broker)[0]

    @property
    def broker_port(self) -> int:
        return parse_broker(self.broker)[1]

    @property
    def tls_enabled(self) -> bool:
        """TLS when a CA or client certificate is configured, or the broker is ``mqtts://``."""
        return bool(self.tls.ca_file or self.tls.cert_file
                    or self.broker.strip().startswith("mqtts://"))

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client-side TLS context every MQTT client uses, or None for plain TCP."""
        return tls_context(self.tls) if self.tls_enabled else None

    def mqtt_credentials(self) -> tuple[str | None, str | None]:
        """(username, password) for CONNECT; (None, None) when not configured."""
        return (self.auth.username or None, self.auth.password or None)

    def allows(self, action: str) -> bool:
        """Whether this operator's role may do ``action`` (see :mod:`fleet_tui.domain.roles`);
        ``read_only`` allows only viewing whatever the role."""
        from fleet_tui.domain.roles import allows, mutating

        return allows(self.role, action) and not (self.read_only and mutating(action))

    def require(self, action: str) -> None:
        """Raise :class:`PermissionDenied` (a ConfigError: the CLI prints it, exit 2)
        unless this operator may do ``action``."""
        from fleet_tui.domain.roles import RoleError, require

        role = "viewer" if self.read_only else self.role
        try:
            require(role, action)
        except RoleError as err:
            raise PermissionDenied(str(err) + (" (read-only)" if self.read_only else ""),
                                   role, action) from None

    def audit_fields(self) -> dict[str, str]:
        """Who is acting, for the audit log: ``{"actor": operator, "role": role}``."""
        return {"actor": self.operator, "role": "viewer" if self.read_only else self.role}


ENV_VARS = {
    "FLEET_TUI_DB": "db",
    "FLEET_TUI_BROKER": "broker",
    "FLEET_TUI_SHADOW_PREFIX": "shadow_prefix",
    "FLEET_TUI_FLEET_PREFIX": "fleet_prefix",
    "FLEET_TUI_OPERATOR": "operator",
    "FLEET_TUI_ROLE": "role",
    "FLEET_TUI_READ_ONLY": "read_only",
}
ROLES = ("viewer", "operator", "approver")
#: Nested settings from the environment: var -> (section, key).
SECTION_ENV_VARS = {
    "FLEET_TUI_TLS_CA": ("tls", "ca_file"),
    "FLEET_TUI_TLS_CERT": ("tls", "cert_file"),
    "FLEET_TUI_TLS_KEY": ("tls", "key_file"),
    "FLEET_TUI_TLS_INSECURE": ("tls", "insecure"),
    "FLEET_TUI_MQTT_USERNAME": ("auth", "username"),
    "FLEET_TUI_MQTT_PASSWORD": ("auth", "password"),
}


class PermissionDenied(ConfigError):
    """The operator's role does not allow an action; the message names both."""

    def __init__(self, message: str, role: str, action: str) -> None:
        super().__init__(message)
        self.role, self.action = role, action


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context: TLS 1.2+, chain verification always on, host name check unless
    ``insecure``; the client certificate when configured. Bad files -> ConfigError."""
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"tls.{key} {path!r}: no such file")
    if tls.key_file and not tls.cert_file:
        raise ConfigError("tls.key_file is set without tls.cert_file")
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.insecure:
            ctx.check_hostname = False  # chain still verified: verify_mode stays CERT_REQUIRED
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"tls: cannot load certificates: {err}") from None
    return ctx


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``mqtt://`` allowed; ``mqtts://`` defaults to 8883) -> (host, port)."""
    stripped = text.strip()
    default_port = "8883" if stripped.startswith("mqtts://") else "1883"
    raw = stripped.removeprefix("mqtt://").removeprefix("mqtts://")
    host, sep, port = raw.rpartition(":")
    if not sep:
        host, port = raw, default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"broker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


def _line_of(text: str, key: str) -> int | None:
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(key) and "=" in line:
            return lineno
    return None


def _coerce(value: Any, default: Any, where: str) -> Any:
    kind = type(default)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                        "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, bool):
            return value
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is str and isinstance(value, str):
        return value
    elif kind is dict and isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")


def _apply(target: Any, values: dict[str, Any], source: str, text: str = "",
           prefix: str = "") -> None:
    known = {f.name: f for f in fields(target) if f.name != "config_path"}
    for key, value in values.items():
        line = _line_of(text, key) if text else None
        where = f"{source}:{line}" if line else source
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {prefix + key!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{prefix + key}] must be a table")
            _apply(current, value, source, text, prefix=f"{prefix}{key}.")
        else:
            setattr(target, key, _coerce(value, current, f"{where}: {prefix + key}"))


def config_path() -> Path:
    env = os.environ.get("FLEET_TUI_CONFIG")
    return Path(env) if env else xdg_dir("CONFIG", ".config") / "config.toml"


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings: defaults, then the config file, then env vars, then ``overrides``.

    ``overrides`` holds flag values (None means "flag not given").
    """
    settings = Settings()
    path = path or config_path()
    if path.exists():
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: {err}") from None
        _apply(settings, data, str(path), text)
        settings.config_path = path
    env = {attr: os.environ[var] for var, attr in ENV_VARS.items() if var in os.environ}
    _apply(settings, env, "environment")
    sections: dict[str, dict[str, str]] = {}
    for var, (section, key) in SECTION_ENV_VARS.items():
        if var in os.environ:
            sections.setdefault(section, {})[key] = os.environ[var]
    _apply(settings, sections, "environment")
    _apply(settings, {k: v for k, v in (overrides or {}).items() if v is not None}, "flags")
    if settings.mqtt_version not in ("3.1.1", "5"):
        raise ConfigError(f"mqtt_version {settings.mqtt_version!r}: expected \"3.1.1\" or "
                          "\"5\"")
    if settings.role not in ROLES:
        raise ConfigError(f"role {settings.role!r}: expected one of {', '.join(ROLES)}")
    parse_broker(settings.broker)
    if settings.read_only:
        settings.role = "viewer"
    if settings.role == "viewer":
        settings.read_only = True  # the console hides mutating actions for viewers
    return settings
