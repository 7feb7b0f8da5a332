"""The CLI against a registry that wants mutual TLS and tokens: flags and environment both work, and
refusals are one clear line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import assert_one_line_error, maas
from tests.processes import ServiceProcess, start_service
from tests.security.pki import Pki, make_pki

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_registry(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("secure-registry")
    env = {
        "MAAS_REGISTRY_PORT": "0",
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_REGISTRY_DATA_DIR": str(work),
        "MAAS_REGISTRY_AUTH_TOKENS": "reader-token-0123456789:read,admin-token-0123456789:admin",
        "MAAS_REGISTRY_TLS_CERT_FILE": str(pki.server.cert),
        "MAAS_REGISTRY_TLS_KEY_FILE": str(pki.server.key),
        "MAAS_REGISTRY_TLS_CLIENT_CA_FILE": str(pki.ca.cert),
    }
    proc = start_service("maas.registry", env, work / "registry.log")
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    finally:
        proc.stop()


def test_tls_and_token_from_flags(secure_registry: ServiceProcess, pki: Pki) -> None:
    tls = ["--ca-file", str(pki.ca.cert), "--cert-file", str(pki.client.cert), "--key-file", str(pki.client.key)]
    env = {"MAAS_REGISTRY_ADDRESS": secure_registry.address, "MAAS_TIMEOUT": "5"}
    ok = maas("models", "ls", "--json", *tls, "--token", "reader-token-0123456789", env=env)
    assert ok.rc == 0, ok.stderr
    assert ok.json() == []

    no_token = maas("models", "ls", *tls, env=env)
    assert_one_line_error(no_token)
    assert "unauthenticated" in no_token.stderr
    wrong = maas("models", "ls", *tls, "--token", "nope-nope-nope-nope-nope", env=env)
    assert_one_line_error(wrong)
    assert "unauthenticated" in wrong.stderr
    read_only = maas("alias", "set", "digits", "production", "1", *tls, "--token", "reader-token-0123456789", env=env)
    assert_one_line_error(read_only)
    assert "permission denied" in read_only.stderr
    plaintext = maas("models", "ls", "--token", "reader-token-0123456789", env=env)
    assert_one_line_error(plaintext)


def test_tls_and_token_from_the_environment(secure_registry: ServiceProcess, pki: Pki) -> None:
    env = {
        "MAAS_REGISTRY_ADDRESS": secure_registry.address,
        "MAAS_TOKEN": "admin-token-0123456789",
        "MAAS_TLS_CA": str(pki.ca.cert),
        "MAAS_TLS_CERT": str(pki.client.cert),
        "MAAS_TLS_KEY": str(pki.client.key),
    }
    ok = maas("models", "ls", "--json", env=env)
    assert ok.rc == 0, ok.stderr
    stranger = maas("models", "ls", env={**env, "MAAS_TLS_CERT": str(pki.stranger.cert),
                                         "MAAS_TLS_KEY": str(pki.stranger.key), "MAAS_TIMEOUT": "5"})  # fmt: skip
    assert_one_line_error(stranger)


def test_health_probe_over_mutual_tls(secure_registry: ServiceProcess, pki: Pki) -> None:
    probe = [sys.executable, "-m", "maas.cli.health", secure_registry.address, "--timeout", "5"]
    tls = ["--ca-file", str(pki.ca.cert), "--cert-file", str(pki.client.cert), "--key-file", str(pki.client.key)]
    assert subprocess.run([*probe, *tls], capture_output=True).returncode == 0
    assert subprocess.run(probe, capture_output=True).returncode == 1


def test_missing_certificate_file_is_one_line(tmp_path: Path) -> None:
    result = maas("models", "ls", "--ca-file", str(tmp_path / "none.pem"), env={})
    assert_one_line_error(result)
    assert "none.pem" in result.stderr


def assert_no_core_text(result) -> None:  # type: ignore[no-untyped-def]
    assert "ssl_transport_security" not in result.stderr and "TSI_" not in result.stderr, result.stderr
    assert "maas up" not in result.stderr, result.stderr  # the suite is running; that hint would mislead


def test_a_tls_mismatch_is_one_line_naming_the_fix(secure_registry: ServiceProcess, pki: Pki) -> None:
    env = {"MAAS_REGISTRY_ADDRESS": secure_registry.address, "MAAS_TIMEOUT": "5"}
    client_pair = ["--cert-file", str(pki.client.cert), "--key-file", str(pki.client.key)]
    # No TLS at all against a TLS server.
    plaintext = maas("models", "ls", "--token", "reader-token-0123456789", env=env)
    assert_one_line_error(plaintext)
    assert_no_core_text(plaintext)
    assert "TLS" in plaintext.stderr and "--ca-file" in plaintext.stderr and "MAAS_TLS_CA" in plaintext.stderr
    # TLS, but the server's certificate is not signed by the CA given.
    other_ca = pki.stranger.cert.parent / "other-ca.crt"
    wrong_ca = maas("models", "ls", "--ca-file", str(other_ca), *client_pair, env=env)
    assert_one_line_error(wrong_ca)
    assert_no_core_text(wrong_ca)
    assert "--ca-file" in wrong_ca.stderr and "MAAS_TLS_CA" in wrong_ca.stderr

    # TLS with the right CA, but no client certificate for a server that wants one.
    no_certificate = maas("models", "ls", "--ca-file", str(pki.ca.cert), env=env)
    assert_one_line_error(no_certificate)
    assert_no_core_text(no_certificate)
    assert "--cert-file" in no_certificate.stderr and "MAAS_TLS_CERT" in no_certificate.stderr
