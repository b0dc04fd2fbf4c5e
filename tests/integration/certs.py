"""A throwaway certificate authority for TLS tests, made with the openssl CLI.

EC P-256 keys (fast to generate); the server certificate names 127.0.0.1 and localhost;
client certificates carry the identity in the CN (mosquitto ``use_identity_as_username``
turns it into the user name the ACL sees).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


class TestCA:
    """``TestCA(dir)``: ``ca.crt``; ``.server()`` and ``.client(cn)`` return (cert, key)."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "fleet-test-ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / f"{name}.crt"
        self.key = self.dir / f"{name}.key"
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(self.key),
             "-out", str(self.cert), "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        self._serial = 1

    def issue(self, cn: str, *, server: bool = False,
              sans: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path]:
        cert, key, csr = (self.dir / f"{cn}.crt", self.dir / f"{cn}.key",
                          self.dir / f"{cn}.csr")
        ext = self.dir / f"{cn}.ext"
        if server:
            ext.write_text(f"subjectAltName={sans}\n"
                           "extendedKeyUsage=serverAuth\n")
        else:
            ext.write_text("extendedKeyUsage=clientAuth\n")
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr),
             cwd=self.dir)
        self._serial += 1
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
             "-set_serial", str(self._serial), "-days", "2", "-extfile", str(ext),
             "-out", str(cert), cwd=self.dir)
        return cert, key

    def server(self) -> tuple[Path, Path]:
        return self.issue("broker", server=True)

    def client(self, cn: str) -> tuple[Path, Path]:
        return self.issue(cn)
