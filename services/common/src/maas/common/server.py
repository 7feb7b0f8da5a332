"""The server lifecycle, written once for every service.

create -> interceptors -> health + reflection -> start -> wait for SIGTERM or
SIGINT -> health NOT_SERVING -> stop(grace) -> application cleanup.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from maas.common.auth import AuthInterceptor, TokenError, TokenTable, load_tokens
from maas.common.interceptors import AccessLogInterceptor, ErrorMappingInterceptor, MetricsInterceptor
from maas.common.keepalive import KEEPALIVE, Keepalive
from maas.common.metrics_http import MetricsListener, start_metrics_listener, tls_context
from maas.common.parsing import ParseGuardInterceptor
from maas.common.settings import ServerSettings

if TYPE_CHECKING:
    from maas.common.sql import Database

log = logging.getLogger("maas.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """Per-service health as grpc.health.v1 reports it.

    The overall status ("") is SERVING only while every service of the process
    is; services flip themselves with `set` (e.g. when the database goes away).
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._status: dict[str, bool] = {name: False for name in services}
        # A status is unknown to clients (NOT_FOUND) until published once.
        self._published: set[str] = set()

    async def set(self, service: str, serving: bool) -> None:
        if service in self._published and self._status.get(service) == serving:
            return
        self._published.add(service)
        self._status[service] = serving
        await self.servicer.set(service, SERVING if serving else NOT_SERVING)
        overall = all(self._status.values())
        await self.servicer.set("", SERVING if overall else NOT_SERVING)
        log.info("health: %s is %s", service or "server", "SERVING" if serving else "NOT_SERVING")

    async def set_all(self, serving: bool) -> None:
        for name in list(self._status):
            await self.set(name, serving)

    def serving(self, service: str) -> bool:
        return self._status.get(service, False)

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()


class App(Protocol):
    """What a service plugs into the lifecycle."""

    service_names: Sequence[str]

    def register(self, server: aio.Server) -> None:
        """Add the service's servicers to the server."""

    async def start(self, health: Health) -> None:
        """Begin background work; set health to SERVING when ready."""

    async def stop(self) -> None:
        """Release resources after the server stopped accepting calls."""


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    health: Health
    app: App
    settings: ServerSettings
    metrics_registry: CollectorRegistry
    metrics_port: int = 0
    _metrics: MetricsListener | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health first, then in-flight calls get `grace` seconds."""
        await self.health.shutdown()
        await self.server.stop(self.settings.grace_seconds if grace is None else grace)
        await self.app.stop()
        if self._metrics is not None:
            self._metrics.close()


class InsecureConfiguration(RuntimeError):
    """Refused at start: the settings would expose an unprotected server."""


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def security_of(settings: ServerSettings) -> tuple[dict[str, str], grpc.ServerCredentials | None]:
    """Tokens and TLS credentials; refuses an exposed, unprotected server."""
    inline = settings.auth_tokens.get_secret_value() if settings.auth_tokens is not None else None
    try:
        tokens = load_tokens(inline, settings.auth_tokens_file)
    except (TokenError, OSError) as exc:
        raise InsecureConfiguration(f"auth tokens: {exc}") from exc
    missing = [name for name, present in (("auth tokens", bool(tokens)), ("TLS", settings.tls)) if not present]
    # The same rule for both listeners: /metrics shows traffic, model names and versions.
    listeners = [("", settings.host)] + ([("/metrics ", settings.metrics_host)] if settings.metrics_port else [])
    for what, host in listeners:
        if missing and not is_loopback(host) and not settings.allow_insecure:
            raise InsecureConfiguration(
                f"refusing to serve {what}on {host} without {' and '.join(missing)}; "
                "configure them, bind 127.0.0.1, or set allow_insecure explicitly"
            )
    credentials = None
    if settings.tls:
        if settings.tls_key_file is None or settings.tls_cert_file is None:
            raise InsecureConfiguration("tls_cert_file needs tls_key_file")
        client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
    return tokens, credentials


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


async def start_server(
    settings: ServerSettings,
    app: App,
    *,
    extra_interceptors: Sequence[aio.ServerInterceptor] = (),
    metrics_registry: CollectorRegistry | None = None,
    server_options: Sequence[tuple[str, Any]] = (),
    keepalive: Keepalive = KEEPALIVE,
) -> RunningServer:
    registry = metrics_registry or CollectorRegistry()
    tokens, credentials = security_of(settings)
    interceptors: list[aio.ServerInterceptor] = [*extra_interceptors]
    if settings.metrics_port:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        interceptors.append(MetricsInterceptor(registry))
    if settings.access_log:
        interceptors.append(AccessLogInterceptor())
    if tokens:
        interceptors.append(AuthInterceptor(tokens))
    # Innermost, so the observers above see the final status code; inside it, requests
    # that do not parse become InvalidArgument instead of gRPC's UNKNOWN.
    interceptors.append(ErrorMappingInterceptor())
    interceptors.append(ParseGuardInterceptor())

    server = aio.server(
        interceptors=interceptors,
        options=[*channel_options(settings.max_message_bytes), *keepalive.server_options(), *server_options],
    )
    health = Health(app.service_names)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    app.register(server)
    if settings.reflection:
        names = [*app.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    address = f"{_bind_host(settings.host)}:{settings.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    await health.set_all(False)
    metrics = _start_metrics(settings, registry, tokens)
    try:
        await server.start()
    except BaseException:
        if metrics is not None:
            metrics.close()
        raise
    running = RunningServer(server, port, health, app, settings, registry)
    if metrics is not None:
        running._metrics, running.metrics_port = metrics, metrics.port
    try:
        await app.start(health)
    except BaseException:
        await running.stop(grace=0)
        raise
    return running


def _start_metrics(
    settings: ServerSettings, registry: CollectorRegistry, tokens: dict[str, str]
) -> MetricsListener | None:
    """The /metrics listener with the gRPC server's TLS (client certificates included) and tokens."""
    if not settings.metrics_port:
        return None
    tls = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls = tls_context(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    table = TokenTable(tokens) if tokens else None
    return start_metrics_listener(settings.metrics_host, settings.metrics_port, registry, tokens=table, tls=tls)


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve_forever(settings: ServerSettings, app: App, *, name: str, **kwargs: Any) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully. Used by each `__main__`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received %s", name, sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        running = await start_server(settings, app, **kwargs)
    except InsecureConfiguration as exc:
        log.error("%s: %s", name, exc)
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    scheme = "https" if settings.tls else "http"
    metrics_host = _bind_host(settings.metrics_host)
    metrics = f", metrics on {scheme}://{metrics_host}:{running.metrics_port}/metrics" if running.metrics_port else ""
    log.info("%s listening on %s%s", name, running.address, metrics)
    print(f"{name} listening on {running.address}{metrics}", flush=True)
    await stop.wait()
    log.info("%s stopping (grace %.1fs)", name, settings.grace_seconds)
    await running.stop()
    log.info("%s stopped", name)


S = TypeVar("S", bound=ServerSettings)


def database_service_main(
    argv: list[str] | None,
    *,
    name: str,
    settings: Callable[[], S],
    database_url: Callable[[S], str],
    app: Callable[[S], App],
    upgrade: Callable[[Database], str],
) -> int:
    """`python -m maas.<name> [serve|migrate]` of a service with a database (registry, trainer).

    `app` and `upgrade` import what they need when called: `migrate` never loads
    the servicer, and serving leaves migrations to the app's start.
    """
    parser = argparse.ArgumentParser(prog=f"maas-{name}", description=f"The maas {name} service.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    config = settings()
    configure_logging(config.log_level)
    if args.command == "migrate":
        from maas.common.sql import Database, redact

        db = Database(database_url(config))
        revision = upgrade(db)
        print(f"database {redact(db.url)} at revision {revision}")
        db.dispose()
        return 0
    asyncio.run(serve_forever(config, app(config), name=name))
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Migration chatter at start-up is noise unless something goes wrong.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


__all__ = [
    "App",
    "Health",
    "RunningServer",
    "channel_options",
    "configure_logging",
    "database_service_main",
    "serve_forever",
    "start_server",
]
