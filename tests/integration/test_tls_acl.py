"""TLS and per-device access against a real mosquitto: a throwaway CA, a TLS listener,
the ACL from `fleet-tui broker acl`, certificate or password authentication, and the real
FleetService (its registry on SQLite and PostgreSQL). Device A must not read or write device
B's shadow."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from fleet_tui.config import Settings, TlsSettings, tls_context
from fleet_tui.registry.registry import Registry
from fleet_tui.service.broker_acl import dynsec_commands, mosquitto_acl
from fleet_tui.service.client import ServiceError, ShadowClient
from fleet_tui.service.topics import Topics
from fleet_tui.sim.mqtt_lite import MqttClient, MqttError
from tests.integration.certs import TestCA
from tests.integration.mosquitto import Mosquitto, TlsListener
from tests.integration.service_harness import Peer, running_service

TOPICS = Topics()
PASSWORDS = {"fleet-service": "svc-secret", "dev-a": "a-secret", "dev-b": "b-secret",
             "console": "console-secret"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    authority = TestCA(tmp_path_factory.mktemp("ca"))
    authority.server()
    for cn in ("fleet-service", "dev-a", "dev-b", "console"):
        authority.client(cn)
    return authority


def _cert(ca: TestCA, cn: str) -> tuple[Path, Path]:
    return ca.dir / f"{cn}.crt", ca.dir / f"{cn}.key"


def _tls(ca: TestCA, cn: str | None = None, **kw: Any) -> TlsSettings:
    cert, key = _cert(ca, cn) if cn else (Path(""), Path(""))
    return TlsSettings(ca_file=str(ca.cert), cert_file=str(cert) if cn else "",
                       key_file=str(key) if cn else "", **kw)


@contextlib.contextmanager
def broker(ca: TestCA, tmp: Path, auth: str | None) -> Iterator[Mosquitto]:
    """A TLS broker; ``auth``: None (server TLS only), "certificate" or "password"."""
    cert, key = _cert(ca, "broker")
    listener = TlsListener(ca.cert, cert, key, require_certificate=auth == "certificate",
                           use_identity_as_username=auth == "certificate")
    acl = pw = None
    if auth is not None:
        acl = tmp / "acl"
        acl.write_text(mosquitto_acl(TOPICS, app_users=["console"]))
    if auth == "password":
        pw = tmp / "passwd"
        pw.touch()
        for user, password in PASSWORDS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True,
                           capture_output=True)
    dynsec = None
    if auth == "dynsec":
        acl = None
        dynsec = tmp / "dynsec" / "dynamic-security.json"
        dynsec.parent.mkdir()
        subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(dynsec), "admin",
                        "admin-secret"], check=True, capture_output=True)
    mosq = Mosquitto(tls=listener, acl_file=acl, password_file=pw, dynsec_file=dynsec).start()
    try:
        if dynsec is not None:
            _dynsec_setup(mosq, ca, tmp)
        yield mosq
    finally:
        mosq.close()


def _dynsec_setup(mosq: Mosquitto, ca: TestCA, tmp: Path) -> None:
    """Send the generated dynamic-security commands as the admin, then set passwords
    (``-m``: mosquitto 2.0.11's plugin refused the same JSON sent with ``-f``)."""
    commands = dynsec_commands(TOPICS, app_users=["console"], devices=["dev-a", "dev-b"])
    commands["commands"] += [{"command": "setClientPassword", "username": u, "password": pw}
                             for u, pw in PASSWORDS.items()]
    request = tmp / "dynsec-commands.json"
    request.write_text(json.dumps(commands))
    out = subprocess.run(
        ["mosquitto_rr", "-h", mosq.host, "-p", str(mosq.port), "--cafile", str(ca.cert),
         "-u", "admin", "-P", "admin-secret", "-t", "$CONTROL/dynamic-security/v1",
         "-e", "$CONTROL/dynamic-security/v1/response", "-m", request.read_text(), "-W", "5"],
        check=True, capture_output=True, text=True)
    responses = json.loads(out.stdout)["responses"]
    assert len(responses) == len(commands["commands"])
    assert not [r for r in responses if "error" in r], responses


def _settings(mosq: Mosquitto, db: str, ca: TestCA, auth: str | None, user: str) -> Settings:
    s = Settings(db=db, broker=mosq.url)
    s.tls = _tls(ca, user if auth == "certificate" else None)
    if auth in ("password", "dynsec"):
        s.auth.username, s.auth.password = user, PASSWORDS[user]
    return s


@contextlib.asynccontextmanager
async def device(mosq: Mosquitto, ca: TestCA, auth: str, thing: str,
                 subscriptions: list[str]) -> AsyncIterator[tuple[Peer, list[int]]]:
    """An MQTT client as device ``thing`` (client id == user name == thing); yields the
    peer and the SUBACK reason codes of its subscriptions."""
    settings = _settings(mosq, "sqlite://", ca, auth, thing)
    ctx = settings.ssl_context()
    client = aiomqtt.Client(
        mosq.host, mosq.port, identifier=thing, tls_context=ctx,
        username=settings.auth.username or None, password=settings.auth.password or None,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], keepalive=5)
    async with client:
        p = Peer(client)
        granted: list[int] = []
        for topic in subscriptions:
            codes = await client.subscribe(topic, qos=1)
            granted += [getattr(c, "value", c) for c in codes or ()]

        async def read() -> None:
            async for message in client.messages:
                p.inbox.append((message.topic.value,
                                orjson.loads(bytes(message.payload))))  # type: ignore[arg-type]
                p.arrived.set()

        reader = asyncio.create_task(read())
        try:
            yield p, granted
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader


# ----------------------------------------------------------------------- TLS


async def test_service_and_cli_work_over_tls_with_the_server_verified(
        ca: TestCA, tmp_path: Path, db_url: str) -> None:
    with broker(ca, tmp_path, None) as mosq:
        settings = _settings(mosq, db_url, ca, None, "fleet-service")
        registry = Registry.open(settings.db)
        async with running_service(settings, registry) as service:
            result = await ShadowClient(settings).update_desired("dev-a", {"led_is_on": True})
            assert result["state"]["desired"] == {"led_is_on": True}
            assert service.shadows.document("dev-a") is not None
        registry.close()


async def test_server_certificate_from_another_ca_is_refused(ca: TestCA, tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other", name="other-ca")
    with broker(ca, tmp_path, None) as mosq:
        for insecure in (False, True):  # insecure skips only the host name, never the chain
            settings = Settings(broker=mosq.url)
            settings.tls = TlsSettings(ca_file=str(other.cert), insecure=insecure)
            with pytest.raises(ServiceError):
                await ShadowClient(settings, timeout=3).get("dev-a")
            with pytest.raises(MqttError, match="TLS"):
                await MqttClient.connect(mosq.host, mosq.port, "dev-a",
                                         on_message=lambda t, p: None,
                                         tls=settings.ssl_context())
        plain = await asyncio.open_connection(mosq.host, mosq.port)  # no TLS: no MQTT
        plain[1].close()


async def test_host_name_mismatch_is_refused_unless_insecure(ca: TestCA, tmp_path: Path) -> None:
    cert, key = ca.issue("wrong-name", server=True, sans="DNS:broker.invalid")
    mosq = Mosquitto(tls=TlsListener(ca.cert, cert, key)).start()
    try:
        with pytest.raises(MqttError, match="TLS"):
            await MqttClient.connect(mosq.host, mosq.port, "dev-a", on_message=lambda t, p: None,
                                     tls=tls_context(_tls(ca)))
        client = await MqttClient.connect(mosq.host, mosq.port, "dev-a",
                                          on_message=lambda t, p: None,
                                          tls=tls_context(_tls(ca, insecure=True)))
        await client.disconnect()
    finally:
        mosq.close()


def test_tls_settings_with_missing_files_fail_with_the_key_named(tmp_path: Path) -> None:
    from fleet_tui.config import ConfigError

    with pytest.raises(ConfigError, match=r"tls\.ca_file"):
        tls_context(TlsSettings(ca_file=str(tmp_path / "nope.pem")))
    with pytest.raises(ConfigError, match="key_file is set without"):
        tls_context(TlsSettings(key_file=__file__))


# ----------------------------------------------------------------------- ACL


@pytest.mark.parametrize("auth", ["certificate", "password", "dynsec"])
async def test_device_cannot_read_or_write_another_devices_shadow(
        ca: TestCA, tmp_path: Path, auth: str, db_url: str) -> None:
    p = TOPICS.shadow_prefix
    with broker(ca, tmp_path, auth) as mosq:
        settings = _settings(mosq, db_url, ca, auth, "fleet-service")
        registry = Registry.open(settings.db)
        async with running_service(settings, registry) as service, \
                device(mosq, ca, auth, "dev-b", [f"{p}/dev-b/shadow/#"]) as (b, _), \
                device(mosq, ca, auth, "dev-a", [
                    f"{p}/dev-a/shadow/#", f"{p}/dev-b/shadow/#", f"{p}/+/shadow/#",
                    "fleet/#"]) as (a, granted), \
                device(mosq, ca, auth, "console",
                       [f"{p}/+/shadow/update/documents"]) as (console, _):
            # mosquitto's acl_file grants the SUBSCRIBE and filters on delivery (read
            # access), so the proof is what arrives below, not the SUBACK.
            assert granted[0] < 0x80
            # Its own topics work end to end with the real service.
            await a.publish(TOPICS.shadow("dev-a"), {"state": {"reported": {"led_is_on": False}}})
            await a.wait_for(lambda t, d: t == TOPICS.shadow("dev-a", suffix="accepted"))
            await b.publish(TOPICS.shadow("dev-b"), {"state": {"reported": {"led_is_on": True}},
                                                     "clientToken": "b1"})
            await b.wait_for(lambda t, d: t.endswith("dev-b/shadow/update/accepted"))
            # A writes B's desired state and spoofs an answer to B; neither arrives.
            await a.publish(TOPICS.shadow("dev-b"), {"state": {"desired": {"led_is_on": False}}})
            await a.publish(TOPICS.shadow("dev-b", suffix="delta"),
                            {"state": {"led_is_on": False}, "version": 99})
            # A spoofs its own documents stream, which only the service may write.
            await a.publish(TOPICS.shadow("dev-a", suffix="documents"), {"spoofed": True})
            await a.publish(TOPICS.presence("dev-b"), {"state": "offline"})
            # The console still sees B's legitimate change; a marker proves delivery order.
            await b.publish(TOPICS.shadow("dev-b"), {"state": {"reported": {"marker": 1}}})
            await console.wait_for(lambda t, d: "dev-b" in t and d["current"]["state"].get(
                "reported", {}).get("marker") == 1)
            await asyncio.sleep(0.3)
            assert not [t for t, _ in a.inbox if "/dev-b/" in t], a.inbox
            assert not b.received("/delta"), b.inbox
            assert not [d for t, d in console.inbox if "spoofed" in d]
            doc = service.shadows.document("dev-b")
            assert doc is not None and "led_is_on" not in doc.desired
            assert doc.reported["led_is_on"] is True
        registry.close()


async def test_wrong_password_and_anonymous_clients_are_refused(
        ca: TestCA, tmp_path: Path) -> None:
    with broker(ca, tmp_path, "password") as mosq:
        settings = _settings(mosq, "sqlite://", ca, "password", "dev-a")
        for username, password in (("dev-a", "wrong"), (None, None)):
            with pytest.raises(MqttError, match="refused"):
                await MqttClient.connect(mosq.host, mosq.port, "dev-a",
                                         on_message=lambda t, p: None,
                                         tls=settings.ssl_context(), username=username,
                                         password=password)
        client = await MqttClient.connect(mosq.host, mosq.port, "dev-a",
                                          on_message=lambda t, p: None,
                                          tls=settings.ssl_context(), username="dev-a",
                                          password=PASSWORDS["dev-a"])
        await client.disconnect()


async def test_device_credentials_cannot_read_another_shadow_through_the_cli(
        ca: TestCA, tmp_path: Path, db_url: str) -> None:
    """With dev-a's certificate the CLI gets dev-a's shadow but never dev-b's: the request
    is dropped by the broker, so the service never answers."""
    with broker(ca, tmp_path, "certificate") as mosq:
        service_settings = _settings(mosq, db_url, ca,
                                     "certificate", "fleet-service")
        registry = Registry.open(service_settings.db)
        async with running_service(service_settings, registry):
            settings = _settings(mosq, "sqlite://", ca, "certificate", "dev-a")
            client = ShadowClient(settings, timeout=2)
            own = await client.update_desired("dev-a", {"led_is_on": True})
            assert own["state"]["desired"] == {"led_is_on": True}
            with pytest.raises(ServiceError, match="no answer"):
                await client.update_desired("dev-b", {"led_is_on": True})
            console = _settings(mosq, "sqlite://", ca, "certificate", "console")
            with pytest.raises(ServiceError, match="404"):  # B really has no shadow
                await ShadowClient(console, timeout=3).get("dev-b")
        registry.close()


async def test_simulated_device_with_its_certificate_reaches_the_service(
        ca: TestCA, tmp_path: Path, db_url: str) -> None:
    from fleet_tui.sim.cli import device_tls
    from fleet_tui.sim.fleet import Fleet, device_config

    with broker(ca, tmp_path, "certificate") as mosq:
        settings = _settings(mosq, db_url, ca, "certificate",
                             "fleet-service")
        registry = Registry.open(settings.db)
        sim_settings = dataclasses.replace(settings, tls=_tls(ca))
        cfg = device_config({"id": "dev-a", "hardware_rev": "rev-b",
                             "firmware_version": "2.2.0"}, telemetry_interval_s=60)
        async with running_service(settings, registry) as service:
            fleet = Fleet([cfg], mosq.host, mosq.port,
                          tls=device_tls(sim_settings, ca.dir))
            await fleet.start()
            try:
                assert await fleet.wait_connected(1, timeout=10)
                async with asyncio.timeout(10):
                    while (doc := service.shadows.document("dev-a")) is None or \
                            "firmware_version" not in doc.reported:
                        await asyncio.sleep(0.1)
                assert doc.reported["firmware_version"] == "2.2.0"
            finally:
                await fleet.stop()
        registry.close()


def test_tls_context_verifies_by_default(ca: TestCA) -> None:
    ctx = tls_context(_tls(ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    insecure = tls_context(_tls(ca, insecure=True))
    assert insecure.verify_mode == ssl.CERT_REQUIRED and not insecure.check_hostname


@pytest.mark.parametrize("auth", ["certificate", "password"])
async def test_firmware_host_device_over_tls_reaches_the_service_only_as_itself(
        ca: TestCA, tmp_path: Path, auth: str, db_url: str) -> None:
    from tests.integration.devices import FIRMWARE_BINARY

    if not FIRMWARE_BINARY.exists():
        pytest.fail(f"{FIRMWARE_BINARY} is missing: run firmware/build.sh")
    with broker(ca, tmp_path, auth) as mosq:
        settings = _settings(mosq, db_url, ca, auth, "fleet-service")
        registry = Registry.open(settings.db)
        args = [str(FIRMWARE_BINARY), "--thing", "dev-a", "--broker", mosq.url,
                "--state-dir", str(tmp_path / "flash"), "--hardware-rev", "rev-b",
                "--firmware-version", "2.2.0", "--keepalive", "5", "--cafile", str(ca.cert)]
        if auth == "certificate":
            cert, key = _cert(ca, "dev-a")
            args += ["--cert", str(cert), "--key", str(key)]
        else:
            (tmp_path / "pw").write_text(PASSWORDS["dev-a"] + "\n")
            args += ["--password-file", str(tmp_path / "pw")]
        log = (tmp_path / "device.log").open("wb")
        async with running_service(settings, registry) as service:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            try:
                async with asyncio.timeout(15):
                    while (doc := service.shadows.document("dev-a")) is None or \
                            "firmware_version" not in doc.reported:
                        await asyncio.sleep(0.1)
                assert doc.reported["firmware_version"] == "2.2.0"
                await ShadowClient(settings).update_desired("dev-a", {"led_is_on": True})
                async with asyncio.timeout(10):
                    while service.shadows.document("dev-a").reported.get(  # type: ignore[union-attr]
                            "led_is_on") is not True:
                        await asyncio.sleep(0.1)
            finally:
                proc.terminate()
                proc.wait(10)
        registry.close()
        output = (tmp_path / "device.log").read_text(errors="replace")
        assert "TLS on" in output


def test_firmware_refuses_a_client_certificate_without_a_ca(tmp_path: Path) -> None:
    from tests.integration.devices import FIRMWARE_BINARY

    if not FIRMWARE_BINARY.exists():
        pytest.fail(f"{FIRMWARE_BINARY} is missing: run firmware/build.sh")
    result = subprocess.run(
        [str(FIRMWARE_BINARY), "--thing", "dev-a", "--broker", "127.0.0.1:1",
         "--state-dir", str(tmp_path), "--hardware-rev", "rev-b", "--firmware-version", "2.2.0",
         "--cert", "c.pem", "--key", "k.pem"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "without --cafile" in result.stderr


def test_sim_refuses_a_cert_dir_missing_a_devices_certificate(
        ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from fleet_tui import cli

    monkeypatch.setenv("FLEET_TUI_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("FLEET_TUI_TLS_CA", str(ca.cert))
    assert cli.main(["sim", "--devices", "1", "--id-prefix", "zz-", "--broker", "127.0.0.1:1",
                     "--tls-cert-dir", str(ca.dir)]) == 2
    assert ".crt is missing in" in capsys.readouterr().err
