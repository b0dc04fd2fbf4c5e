"""A real mosquitto broker on a free port, started and stopped by the tests themselves.

Never the machine's own broker on 1883: tests stop and restart theirs by its pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DYNSEC_PLUGIN = next(
    (str(p) for p in Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")),
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsListener:
    """The broker's listener speaks TLS with this server certificate; with
    ``require_certificate`` clients need one from ``ca`` and, with
    ``use_identity_as_username``, its CN becomes their user name (what the ACL sees)."""

    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = False
    use_identity_as_username: bool = False

    def conf(self) -> str:
        return (f"cafile {self.ca}\ncertfile {self.cert}\nkeyfile {self.key}\n"
                "tls_version tlsv1.2\n"
                f"require_certificate {str(self.require_certificate).lower()}\n"
                f"use_identity_as_username {str(self.use_identity_as_username).lower()}\n")


class Mosquitto:
    """``Mosquitto().start()``; ``.host``, ``.port``, ``.stop()``, ``.restart()``.

    ``tls`` makes the listener TLS; ``acl_file``/``password_file`` turn on access control
    and authentication (and anonymous access off, as a production broker runs).
    """

    def __init__(self, port: int | None = None, extra_conf: str = "", *,
                 tls: TlsListener | None = None, acl_file: Path | None = None,
                 password_file: Path | None = None, dynsec_file: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.tls = tls
        self.acl_file = acl_file
        self.password_file = password_file
        self.dynsec_file = dynsec_file  # the dynamic-security plugin's state (it rewrites it)
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-mosq-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def _readable(self, path: Path) -> Path:
        """A copy the broker can read after dropping root to its own user (pytest's tmp
        dirs are private to root); throwaway test material only."""
        self.dir.chmod(0o755)
        copy = self.dir / f"{path.parent.name}-{path.name}"
        shutil.copyfile(path, copy)
        copy.chmod(0o644)
        return copy

    def _write_conf(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        tls = self.tls
        if tls is not None:
            tls = dataclasses.replace(tls, ca=self._readable(tls.ca),
                                      cert=self._readable(tls.cert), key=self._readable(tls.key))
        anonymous = all(f is None for f in (self.acl_file, self.password_file,
                                            self.dynsec_file)) and not (
            self.tls is not None and self.tls.require_certificate)
        access = f"allow_anonymous {str(anonymous).lower()}\n"
        if self.acl_file is not None:
            access += f"acl_file {self._readable(self.acl_file)}\n"
        if self.password_file is not None:
            access += f"password_file {self._readable(self.password_file)}\n"
        if self.dynsec_file is not None:
            state = self.dir / "dynsec" / "dynamic-security.json"
            if not state.exists():  # copied once: a restart keeps what the broker saved
                state.parent.mkdir()
                state.parent.chmod(0o777)  # the broker rewrites it as its own user
                shutil.copyfile(self.dynsec_file, state)
                state.chmod(0o666)
                self.dir.chmod(0o755)
            access += f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {state}\n"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            + (tls.conf() if tls is not None else "")
            + access
            + "set_tcp_nodelay true\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 1000\n"
            "persistence false\n"
            f"{self.extra_conf}\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if not Path(self.binary).exists():
            raise RuntimeError("mosquitto is not installed (run scripts/system-deps.sh)")
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self._write_conf())], stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), timeout=0.2
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
