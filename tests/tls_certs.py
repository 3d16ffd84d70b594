"""Throw-away TLS material for tests: a CA and a server certificate it signed, made by the
``openssl`` command line (no Python dependency). The server certificate is valid for
127.0.0.1 and localhost."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Certs:
    ca: Path          # CA certificate (what clients trust)
    cert: Path        # server certificate, signed by the CA
    key: Path         # its private key (unencrypted)
    other_ca: Path    # an unrelated CA: trusting only it must fail verification


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr[-2000:]}")


def make_certs(directory: Path, *, cn: str = "127.0.0.1") -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt",
                 "-subj", f"/CN=SmartLogs test {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={cn}", cwd=d)
    (d / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "server.ext", cwd=d)
    for f in d.glob("*.key"):
        f.chmod(0o644)  # readable by the engines' own users (Elasticsearch runs unprivileged)
    return Certs(ca=d / "ca.crt", cert=d / "server.crt", key=d / "server.key",
                 other_ca=d / "other-ca.crt")
