"""The Prometheus listener of every service: `/metrics` only, behind the gRPC server's TLS and tokens.

prometheus_client's own `start_http_server` answers every path with the metrics and a 200,
so an HTTP client probing for a server (tritonclient.http's `is_server_ready` asks
`/v2/health/ready`) took the metrics port for a ready inference server. Here any other
path is a 404, a request without one of the configured bearer tokens is a 401, and the
exposition itself is still prometheus_client's (`make_wsgi_app`: content negotiation,
gzip, `name[]` filters, 405 for methods other than GET).

The listener runs on its own threads, so a scrape works while the event loop is busy.
With TLS the handshake happens on the connection's thread under the same timeout as the
request, so a client that connects and stays silent never holds up the others.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

from maas.common.auth import TokenTable, bearer_token

log = logging.getLogger("maas.metrics")

PATH = "/metrics"
# Longest a connection may stay silent (TLS handshake, request line, headers) before it is dropped.
TIMEOUT_SECONDS = 10.0

StartResponse = Callable[..., Any]


class MetricsApp:
    """WSGI: `/metrics` (with a valid token when tokens are set) or an error."""

    def __init__(self, registry: CollectorRegistry, tokens: TokenTable | None) -> None:
        self._exposition = make_wsgi_app(registry)
        self._tokens = tokens

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return _plain(start_response, "404 Not Found", f"only {PATH} is served here\n")
        if self._tokens is not None and self._tokens.rank_of(bearer_token(environ.get("HTTP_AUTHORIZATION"))) is None:
            return _plain(
                start_response, "401 Unauthorized", "a valid bearer token is required\n", ("WWW-Authenticate", "Bearer")
            )
        return self._exposition(environ, start_response)  # type: ignore[no-any-return]


def _plain(start_response: StartResponse, status: str, text: str, *headers: tuple[str, str]) -> list[bytes]:
    body = text.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers]
    )
    return [body]


class _Handler(WSGIRequestHandler):
    timeout = TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.tls = tls
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with socket.getfqdn (reverse DNS) for a
        # name nothing here uses: bind without it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(TIMEOUT_SECONDS)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("metrics: TLS handshake with %s failed: %s", client_address, exc)
            return
        with wrapped:
            super().finish_request(wrapped, client_address)


def tls_context(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> ssl.SSLContext:
    """The gRPC server's certificate; with a client CA, client certificates are required as gRPC requires them."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    if client_ca_file is not None:
        context.load_verify_locations(cafile=str(client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class MetricsListener:
    server: _Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_listener(
    host: str,
    port: int,
    registry: CollectorRegistry,
    *,
    tokens: TokenTable | None = None,
    tls: ssl.SSLContext | None = None,
) -> MetricsListener:
    """Bind host:port and serve `/metrics` on a daemon thread; OSError when the port is taken."""
    server = _Server(host.strip("[]"), port, tls)
    server.set_app(MetricsApp(registry, tokens))
    thread = threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True)
    thread.start()
    return MetricsListener(server, thread)


__all__ = ["PATH", "MetricsApp", "MetricsListener", "start_metrics_listener", "tls_context"]
