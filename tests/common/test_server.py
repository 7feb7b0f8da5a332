"""The shared server lifecycle: health, reflection, error mapping, metrics, a missing database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy.engine import make_url

from maas.common import errors
from maas.common.server import Health, start_server
from maas.common.settings import ServerSettings
from maas.v1 import registry_pb2 as pb
from maas.v1 import registry_pb2_grpc
from tests.conftest import registry_settings
from tests.helpers import aiter_of, raises_code, unused_port, upload_messages
from tests.registry.conftest import serving

REGISTRY = "maas.v1.RegistryService"
WAIT = 30.0


async def check(channel: aio.Channel, service: str) -> int:
    resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(resp.status)


async def test_health_reports_serving(registry) -> None:
    async with aio.insecure_channel(registry.address) as channel:
        assert await check(channel, REGISTRY) == health_pb2.HealthCheckResponse.SERVING
        assert await check(channel, "") == health_pb2.HealthCheckResponse.SERVING
        async with raises_code(grpc.StatusCode.NOT_FOUND):
            await check(channel, "maas.v1.NoSuchService")


async def test_reflection_lists_the_services(registry) -> None:
    async with aio.insecure_channel(registry.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            aiter_of(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=REGISTRY),
                    ]
                )
            )
        )
        responses = [r async for r in call]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {REGISTRY, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert responses[1].file_descriptor_response.file_descriptor_proto  # the registry's .proto, for grpcurl


async def test_prometheus_endpoint_counts_calls_by_code(db_url, tmp_path) -> None:
    port = unused_port()
    async with serving(db_url, tmp_path / "artifacts", metrics_port=port) as (running, stub):
        assert running.metrics_port == port
        await stub.CreateModel(pb.CreateModelRequest(name="m"))
        for _ in range(2):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.GetModel(pb.GetModelRequest(name="absent"))
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read())
    body = text.decode()
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateModel",grpc_service="maas.v1.RegistryService"} 1.0'
        in body
    )
    assert (
        'grpc_server_handled_total{grpc_code="NOT_FOUND",grpc_method="GetModel",'
        'grpc_service="maas.v1.RegistryService"} 2.0' in body
    )
    assert "grpc_server_handling_seconds_bucket" in body


# ------------------------------------------------------ unexpected errors ---

SECRET = "/srv/secret/registry.db postgresql://admin:hunter2@db.internal/maas"


class BrokenRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Raises what real bugs raise, in each handler shape."""

    async def GetModel(self, request, context):
        raise RuntimeError(f"cannot open {SECRET}")

    async def ListModels(self, request, context):
        raise errors.NotFound("model 'x' not found")

    async def CreateModel(self, request, context):
        return await asyncio.get_running_loop().run_in_executor(None, self._sync_failure)

    def _sync_failure(self):
        return {}["key " + SECRET]

    async def UploadArtifact(self, request_iterator, context):
        async for _ in request_iterator:
            raise ValueError(f"bad chunk written to {SECRET}")
        return pb.ModelVersion()

    async def WatchEvents(self, request, context):
        yield pb.Event(id=1)
        raise OSError(2, "No such file or directory", SECRET)


class BrokenApp:
    service_names: Sequence[str] = (REGISTRY,)

    def register(self, server: aio.Server) -> None:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(BrokenRegistry(), server)

    async def start(self, health: Health) -> None:
        await health.set_all(True)

    async def stop(self) -> None:
        pass


@pytest.fixture
async def broken() -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:
    running = await start_server(ServerSettings(port=0, metrics_port=0), BrokenApp())
    try:
        async with aio.insecure_channel(running.address) as channel:
            yield registry_pb2_grpc.RegistryServiceStub(channel)
    finally:
        await running.stop(0)


def assert_internal_and_clean(exc: grpc.aio.AioRpcError) -> None:
    assert exc.code() == grpc.StatusCode.INTERNAL, exc
    details = exc.details() or ""
    for leak in ("/srv", "secret", "hunter2", "postgresql://", "Traceback", ".py", "Error"):
        assert leak not in details, details
    trailers = {k: v for k, v in (exc.trailing_metadata() or ())}
    assert not any("secret" in str(v) for v in trailers.values())


async def test_unexpected_exceptions_become_internal_without_leaks(broken, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="maas.grpc")
    calls = [
        lambda: broken.GetModel(pb.GetModelRequest(name="m")),
        lambda: broken.CreateModel(pb.CreateModelRequest(name="m")),
        lambda: broken.UploadArtifact(aiter_of(upload_messages("m", 1, b"abc"))),
    ]
    refs = []
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call()
        assert_internal_and_clean(info.value)
        refs.append((info.value.details() or "").split("ref ")[-1].rstrip(")"))

    stream = broken.WatchEvents(pb.WatchEventsRequest())
    assert (await stream.read()).id == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()
    assert_internal_and_clean(info.value)

    # Domain errors still map through the table.
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await broken.ListModels(pb.ListModelsRequest())
    # The details went to the server log, findable by the reference.
    for ref in refs:
        assert ref and ref in caplog.text
    assert "hunter2" in caplog.text


# ------------------------------------------------------ database missing ---


class Proxy:
    """A TCP forwarder to PostgreSQL that can be switched on later."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_port=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_unreachable_postgres_is_not_serving_then_recovers(postgres_url, tmp_path, held_port) -> None:
    port = held_port  # the proxy binds it later
    url = make_url(postgres_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    pg = make_url(postgres_url)
    settings = registry_settings(
        url, tmp_path / "artifacts", auto_migrate=True, health_interval=0.1, db_connect_timeout=1.0
    )
    from maas.registry.app import RegistryApp

    running = await start_server(settings, RegistryApp(settings))
    proxy = Proxy(port, (pg.host or "127.0.0.1", pg.port or 5432))
    try:
        async with aio.insecure_channel(running.address) as channel:
            # Nothing listens on the database port: the server is up, but says so.
            assert await check(channel, REGISTRY) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await check(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            calls = [
                lambda: stub.GetModel(pb.GetModelRequest(name="m")),
                lambda: stub.CreateModel(pb.CreateModelRequest(name="m")),
                lambda: stub.ListVersions(pb.ListVersionsRequest(model="m")),
                lambda: stub.CreateRun(pb.CreateRunRequest()),
                lambda: stub.UploadArtifact(aiter_of(upload_messages("m", 1, b"abc"))),
                lambda: stub.WatchEvents(pb.WatchEventsRequest()).read(),
            ]
            for call in calls:
                async with raises_code(grpc.StatusCode.UNAVAILABLE):
                    await call()

            # The database appears: health follows, and calls work.
            await proxy.start()
            async with asyncio.timeout(WAIT):
                while await check(channel, REGISTRY) != health_pb2.HealthCheckResponse.SERVING:
                    await asyncio.sleep(0.05)
            assert await check(channel, "") == health_pb2.HealthCheckResponse.SERVING
            async with raises_code(grpc.StatusCode.NOT_FOUND):
                await stub.GetModel(pb.GetModelRequest(name=f"absent-{port}"))
    finally:
        await running.stop(0)
        await proxy.stop()


async def test_a_database_outage_is_logged_with_its_cause_and_no_password(
    postgres_url, tmp_path, caplog, held_port
) -> None:
    port = held_port  # nothing listens there
    url = make_url(postgres_url).set(host="127.0.0.1", port=port, password="hunter2-pw").render_as_string(False)
    settings = registry_settings(
        url, tmp_path / "artifacts", auto_migrate=True, health_interval=0.1, db_connect_timeout=1.0
    )
    from maas.registry.app import RegistryApp

    caplog.set_level(logging.WARNING, logger="maas")
    running = await start_server(settings, RegistryApp(settings))
    try:
        async with asyncio.timeout(WAIT):
            while not (lines := [r.getMessage() for r in caplog.records if "database" in r.getMessage()]):
                await asyncio.sleep(0.05)
    finally:
        await running.stop(0)
    line = lines[0]
    assert "\n" not in line
    assert str(port) in line  # the driver's cause: where it could not connect
    assert "MAAS_REGISTRY_DATABASE_URL" in line  # what to check
    assert "hunter2" not in caplog.text and url not in caplog.text
