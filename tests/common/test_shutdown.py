"""SIGTERM on a real server process: NOT_SERVING first, in-flight calls finish, clean exit."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.v1 import registry_pb2 as pb
from maas.v1 import registry_pb2_grpc
from tests.helpers import big_mlp, upload_messages, version_request
from tests.processes import registry_env, start_service

pytestmark = pytest.mark.slow

WAIT = 60.0


async def test_sigterm_drains_in_flight_calls(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    service = start_service(
        "maas.registry", registry_env(db_url, root, MAAS_REGISTRY_GRACE_SECONDS="30"), tmp_path / "registry.log"
    )
    arch, data = big_mlp(500_000, seed=1)
    messages = list(upload_messages("m", 1, data, chunk=128 * 1024))
    half = len(messages) // 2
    try:
        async with aio.insecure_channel(service.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            await stub.CreateModel(pb.CreateModelRequest(name="m"))
            await stub.CreateVersion(version_request("m", architecture=arch))

            watch = health.Watch(health_pb2.HealthCheckRequest(service="maas.v1.RegistryService"))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

            rest = asyncio.Event()

            async def upload_in_two_halves():
                for message in messages[:half]:
                    yield message
                await rest.wait()
                for message in messages[half:]:
                    yield message

            upload = asyncio.ensure_future(stub.UploadArtifact(upload_in_two_halves()))
            async with asyncio.timeout(WAIT):
                while not list((root / "tmp").glob("*.part")):
                    await asyncio.sleep(0.02)

            service.terminate()
            # Health flips first, while the upload is still in flight ...
            async with asyncio.timeout(WAIT):
                status = (await watch.read()).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not upload.done()
            watch.cancel()
            # ... which then completes within the grace period.
            rest.set()
            async with asyncio.timeout(WAIT):
                ready = await upload
            assert ready.status == pb.VERSION_STATUS_READY
            assert ready.sha256 == hashlib.sha256(data).hexdigest()
        assert await asyncio.to_thread(service.wait, WAIT) == 0
        log = service.log()
        assert "SIGTERM" in log or "stopping" in log
        assert "Traceback" not in log
        # The blob is durable and the temp file gone.
        assert [p.name for p in (root / "blobs").rglob("*") if p.is_file()] == [ready.sha256]
        assert list((root / "tmp").iterdir()) == []
    finally:
        service.stop()


async def test_idle_server_exits_cleanly_on_sigterm(db_url: str, tmp_path: Path) -> None:
    service = start_service("maas.registry", registry_env(db_url, tmp_path / "artifacts"), tmp_path / "registry.log")
    try:
        service.terminate()
        assert await asyncio.to_thread(service.wait, WAIT) == 0
        assert "stopped" in service.log() and "Traceback" not in service.log()
    finally:
        service.stop()
