"""A throwaway certificate authority for TLS tests (openssl, no extra packages)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    stranger: Pair  # signed by another CA


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", str(pair.key), "-out", str(pair.cert))  # fmt: skip
    return pair


def _leaf(directory: Path, name: str, ca: Pair, san: str, usage: str) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
    _run(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(pair.key),
        "-out",
        str(csr),
    )
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
         "-days", "2", "-extfile", str(ext), "-out", str(pair.cert))  # fmt: skip
    return pair


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "maas-test-ca")
    other = _ca(directory, "other-ca")
    return Pki(
        ca=ca,
        server=_leaf(directory, "server", ca, "DNS:localhost,IP:127.0.0.1", "serverAuth"),
        client=_leaf(directory, "client", ca, "DNS:maas-client", "clientAuth"),
        stranger=_leaf(directory, "stranger", other, "DNS:stranger", "clientAuth"),
    )
