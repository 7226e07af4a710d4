"""Certificates made at test time with the openssl CLI: a test CA, server certificates it
signs (for localhost and 127.0.0.1, and for another name), and a second, unrelated CA."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    """PEM file paths."""

    ca: str
    cert: str
    """For DNS:localhost and IP:127.0.0.1, signed by `ca`."""
    key: str
    wrong_name_cert: str
    """For DNS:other.example only, signed by `ca`."""
    wrong_name_key: str
    other_ca: str
    """A CA that signed none of these."""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    pem, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *EC, "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key),
        "-out", str(pem), "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pem, key


def _server(directory: Path, name: str, san: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    pem, key, csr = (directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("req", *EC, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-out", str(pem), "-extfile", str(ext),
    )  # fmt: skip
    return pem, key


def make_certs(directory: Path) -> Certs:
    """Make the test CAs and certificates in `directory`."""
    ca = _ca(directory, "test-ca")
    cert, key = _server(directory, "server", "DNS:localhost,IP:127.0.0.1", ca)
    wrong, wrong_key = _server(directory, "wrong-name", "DNS:other.example", ca)
    other_ca, _ = _ca(directory, "other-ca")
    return Certs(str(ca[0]), str(cert), str(key), str(wrong), str(wrong_key), str(other_ca))
