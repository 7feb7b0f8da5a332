"""The Prometheus listener: /metrics only, the gRPC server's tokens and TLS, the same exposure rule."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.common.server import Health, InsecureConfiguration, RunningServer, start_server
from maas.common.settings import ServerSettings
from tests.helpers import unused_port
from tests.security.pki import Pki, make_pki

READ, ADMIN = "read-token-01234567890", "admin-token-0123456789"
SERVICE = "maas.test.Nothing"


class NothingApp:
    """A server with health only: what is under test is the listener beside it."""

    service_names: Sequence[str] = (SERVICE,)

    def register(self, server: aio.Server) -> None:
        pass

    async def start(self, health: Health) -> None:
        await health.set_all(True)

    async def stop(self) -> None:
        pass


async def started(**settings: Any) -> RunningServer:
    return await start_server(ServerSettings(port=0, metrics_port=unused_port(), **settings), NothingApp())


def get(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None, method: str = "GET") -> int:
    """The status code of one request (errors included)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            body = response.read().decode()
            assert "process_cpu_seconds_total" in body or "python_info" in body, body[:300]
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def status(url: str, **kwargs: Any) -> int:
    return await asyncio.to_thread(get, url, **kwargs)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def test_only_the_metrics_path_answers() -> None:
    running = await started()
    base = f"http://127.0.0.1:{running.metrics_port}"
    try:
        assert await status(f"{base}/metrics") == 200
        for path in ("/", "/v2/health/ready", "/v2/health/live", "/v2", "/metrics/", "/metricsx", "/favicon.ico"):
            assert await status(base + path) == 404, path
        assert await status(f"{base}/metrics", method="POST") == 405
    finally:
        await running.stop(0)


@pytest.mark.slow
async def test_tritonclient_http_does_not_take_the_metrics_port_for_a_server() -> None:
    running = await started()
    probe = (
        "import sys, tritonclient.http as h\n"
        f"c = h.InferenceServerClient('127.0.0.1:{running.metrics_port}')\n"
        "print(c.is_server_live(), c.is_server_ready())\n"
    )
    try:
        # Its own process: tritonclient's generated modules clash with ours in one interpreter.
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
        )
    finally:
        await running.stop(0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


async def test_with_tokens_set_metrics_need_one() -> None:
    running = await started(auth_tokens=f"{READ}:read,{ADMIN}:admin")
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    try:
        assert await status(url) == 401
        assert await status(url, token="not-a-token-of-this-server") == 401
        assert await status(url, token=READ) == 200
        assert await status(url, token=ADMIN) == 200
        # The listener answers nothing else whoever asks.
        assert await status(f"http://127.0.0.1:{running.metrics_port}/v2/health/ready", token=ADMIN) == 404
        unauthorized = await asyncio.to_thread(_headers_of_401, url)
        assert unauthorized.get("WWW-Authenticate") == "Bearer"
        # gRPC health stays open to probes, as before.
        async with aio.insecure_channel(running.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(0)


def _headers_of_401(url: str) -> dict[str, str]:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.HTTPError as exc:
        return dict(exc.headers)
    raise AssertionError("served without a token")


async def test_metrics_are_served_over_the_servers_tls_with_its_client_certificates(pki: Pki) -> None:
    running = await started(
        auth_tokens=f"{READ}:read",
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
    )
    url = f"https://localhost:{running.metrics_port}/metrics"
    trusted = ssl.create_default_context(cafile=str(pki.ca.cert))
    with_client = ssl.create_default_context(cafile=str(pki.ca.cert))
    with_client.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    stranger = ssl.create_default_context(cafile=str(pki.ca.cert))
    stranger.load_cert_chain(str(pki.stranger.cert), str(pki.stranger.key))
    try:
        # A client that connects and says nothing does not hold up the handshakes of others.
        with socket.create_connection(("127.0.0.1", running.metrics_port)):
            assert await status(url, token=READ, context=with_client) == 200
        assert await status(url, context=with_client) == 401
        for context in (trusted, stranger):  # no client certificate, or one from another CA
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                await status(url, token=READ, context=context)
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext to a TLS port
            await status(f"http://127.0.0.1:{running.metrics_port}/metrics", token=READ)
    finally:
        await running.stop(0)


async def test_an_exposed_unprotected_metrics_address_is_refused_at_start(pki: Pki) -> None:
    tls: dict[str, Any] = {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key}
    refused: list[dict[str, Any]] = [{}, {"auth_tokens": f"{ADMIN}:admin"}, tls]
    for kwargs in refused:
        port = unused_port()
        with pytest.raises(InsecureConfiguration, match="/metrics"):
            await start_server(
                ServerSettings(port=0, metrics_port=port, metrics_host="0.0.0.0", **kwargs), NothingApp()
            )
        # Refused before anything was bound.
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", port))
    # Both together, an explicit opt-out, or no metrics listener at all: they start.
    started: list[dict[str, Any]] = [{"auth_tokens": f"{ADMIN}:admin", **tls}, {"allow_insecure": True}]
    for kwargs in [*started, {"metrics_port": 0}]:
        settings: dict[str, Any] = {"port": 0, "metrics_port": unused_port(), "metrics_host": "0.0.0.0", **kwargs}
        running = await start_server(ServerSettings(**settings), NothingApp())
        await running.stop(0)
