"""Throwaway certificates for TLS tests, made with the openssl CLI.

One CA signs a server certificate (127.0.0.1 and localhost) and a client
certificate; a second, unrelated CA signs a client certificate the worker
must refuse. EC P-256 keys, valid for two days.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CA_EXTENSIONS = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
_LEAF_EXTENSIONS = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n{extra}"
)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # Signed by another CA: a certificate the worker must not accept.
    stranger_cert: Path
    stranger_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _key_and_request(directory: Path, name: str) -> tuple[Path, Path]:
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    _openssl("req", "-new", "-key", key, "-subj", f"/CN=device-ops-test-{name}", "-out", request)
    return key, request


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, request = _key_and_request(directory, name)
    extensions = directory / f"{name}.ext"
    extensions.write_text(_CA_EXTENSIONS)
    cert = directory / f"{name}.pem"
    _openssl("x509", "-req", "-in", request, "-signkey", key, "-days", "2", "-extfile", extensions, "-out", cert)
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], usage: str, extra: str = "") -> tuple[Path, Path]:
    key, request = _key_and_request(directory, name)
    extensions = directory / f"{name}.ext"
    extensions.write_text(_LEAF_EXTENSIONS.format(usage=usage, extra=extra))
    cert = directory / f"{name}.pem"
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", f"0x{secrets.token_hex(8)}",
        "-days", "2", "-extfile", extensions, "-out", cert,
    )
    return cert, key


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    server = _leaf(directory, "server", ca, "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client = _leaf(directory, "client", ca, "clientAuth")
    stranger = _leaf(directory, "stranger", _ca(directory, "other-ca"), "clientAuth")
    return Certificates(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        stranger_cert=stranger[0],
        stranger_key=stranger[1],
    )
