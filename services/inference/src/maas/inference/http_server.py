"""The HTTP/REST listener: uvicorn on the service's own event loop, beside the gRPC server.

uvicorn (with httptools' parser) runs the ASGI app on the loop the data plane and
batchers live on, so an HTTP request is submitted exactly as a gRPC one is, with
no thread or process hop. It does not take the process's signals: the service's
lifecycle (`maas.common.server`) stops everything, this listener from `stop`.

The socket is bound here with SO_REUSEPORT, as the gRPC port is, so that several
serving processes (`MAAS_INFERENCE_WORKERS`) share it. TLS uses the gRPC server's
certificate and key, and requires client certificates when it does.

Request heads are bounded: llhttp (under httptools) bounds neither the request
line nor the headers, and uvicorn adds no bound of its own for that parser, so a
connection whose head passes `MAX_HEAD_BYTES` is answered 431 and closed. Bodies
are bounded by the routes (413 past the message size limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("maas.inference.http")

MAX_HEAD_BYTES = 64 * 1024


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request's head (request line and headers).

    A head is measured twice: the request line and headers as the parser hands them
    over (exact, checked once the head is complete), and the bytes received while a
    head is still incomplete (so one that never ends is cut off as it grows). Past
    MAX_HEAD_BYTES the client gets a 431 with the protocol's error body and the
    connection is closed; no route runs.
    """

    def connection_made(self, transport: Any) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._partial_bytes = 0
        self._refused = False
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head and not self._refused and not self.transport.is_closing():
            self._partial_bytes += len(data)
            if self._partial_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._partial_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _refuse_head(self) -> None:
        self._refused = True
        body = json.dumps({"error": f"request line and headers longer than {MAX_HEAD_BYTES} bytes"}).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service's own handlers (serve_forever) decide when to stop; uvicorn's would replace them.
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready SO_REUSEPORT socket on host:port (0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP,
    # and without it a response's body waited ~40 ms behind its headers for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """One uvicorn server over an ASGI app, started and stopped by the inference app."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        grace_seconds: float,
        access_log: bool,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        tls_client_ca_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        tls = tls_cert_file is not None
        self.scheme = "https" if tls else "http"
        self.config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=access_log,
            http=BoundedHttpTools,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(grace_seconds)),
            ssl_certfile=tls_cert_file if tls else None,
            ssl_keyfile=tls_key_file if tls else None,
            ssl_ca_certs=tls_client_ca_file if tls else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls_client_ca_file is not None else ssl.CERT_NONE,
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        # uvicorn's start and stop chatter ("Started server process") is noise beside the service's own lines.
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    async def start(self) -> None:
        """Bind and serve; `port` is then the bound one. Raises what keeps it from serving."""
        sock = bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        server = _Server(self.config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="http")
        self._server, self._task = server, task
        while not server.started:
            if task.done():
                sock.close()
                task.result()  # its error
                raise OSError(f"HTTP server on {self.host}:{self.port} ended while starting")
            await asyncio.sleep(0.01)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the grace), close."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(task, (self.config.timeout_graceful_shutdown or 1) + 5)
        except TimeoutError:
            log.warning("HTTP server did not stop in time")
        except Exception:
            log.exception("HTTP server failed while stopping")
        self._server = self._task = None
