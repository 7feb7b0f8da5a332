"""The registry process SIGKILLed mid-upload: nothing READY, nothing visible, re-upload works."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest

from maas.v1 import registry_pb2 as pb
from maas.v1 import registry_pb2_grpc
from tests.helpers import aiter_of, big_mlp, upload_messages, version_request
from tests.processes import registry_env, start_service

pytestmark = pytest.mark.slow


def blobs(root: Path) -> list[Path]:
    return [p for p in (root / "blobs").rglob("*") if p.is_file()]


async def test_killed_mid_upload(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    env = registry_env(db_url, root)
    arch, data = big_mlp(1_000_000)
    messages = list(upload_messages("m", 1, data, chunk=256 * 1024))
    half = len(messages) // 2
    half_bytes = sum(len(m.chunk) for m in messages[1:half])

    first = start_service("maas.registry", env, tmp_path / "first.log")
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            await stub.CreateModel(pb.CreateModelRequest(name="m"))
            assert (await stub.CreateVersion(version_request("m", architecture=arch))).version == 1

            async def half_then_hang():
                for message in messages[:half]:
                    yield message
                await asyncio.Event().wait()

            call = stub.UploadArtifact(half_then_hang())
            # Wait until the server has written half of the bytes to its temp file.
            async with asyncio.timeout(60):
                while sum(p.stat().st_size for p in (root / "tmp").glob("*.part")) < half_bytes:
                    await asyncio.sleep(0.02)
            first.kill()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        first.stop()

    second = start_service("maas.registry", env, tmp_path / "second.log")
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            version = await stub.GetVersion(pb.GetVersionRequest(model="m", version=1))
            assert version.status == pb.VERSION_STATUS_PENDING
            assert version.sha256 == "" and version.size_bytes == 0
            assert blobs(root) == []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.DownloadArtifact(pb.DownloadArtifactRequest(model="m", version=1)):
                    pass
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=1))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

            ready = await stub.UploadArtifact(aiter_of(iter(messages)))
            assert ready.status == pb.VERSION_STATUS_READY
            assert ready.sha256 == hashlib.sha256(data).hexdigest()
            assert [p.name for p in blobs(root)] == [ready.sha256]
            downloaded = bytearray()
            async for message in stub.DownloadArtifact(pb.DownloadArtifactRequest(model="m", version=1)):
                if message.WhichOneof("part") == "chunk":
                    downloaded += message.chunk
            assert bytes(downloaded) == data
    finally:
        second.stop()
