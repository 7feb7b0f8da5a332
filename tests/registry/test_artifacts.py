"""Artifact upload and download through gRPC: integrity, limits, and nothing half-done."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc

from maas.v1 import registry_pb2 as pb
from tests.helpers import (
    aiter_of,
    big_mlp,
    raises_code,
    ready_version,
    safetensors_bytes,
    upload_messages,
    version_request,
)
from tests.registry.conftest import serving

MiB = 1024 * 1024


def blobs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def parts(root: Path) -> list[Path]:
    return sorted((root / "tmp").iterdir()) if (root / "tmp").exists() else []


async def download(stub, model: str, version: int) -> tuple[pb.ArtifactInfo, bytes, int]:
    """(info, bytes, number of chunk messages)."""
    info: pb.ArtifactInfo | None = None
    data = bytearray()
    chunks = 0
    async for message in stub.DownloadArtifact(pb.DownloadArtifactRequest(model=model, version=version)):
        if message.WhichOneof("part") == "info":
            assert info is None and chunks == 0, "the info message comes first, once"
            info = message.info
        else:
            chunks += 1
            assert len(message.chunk) <= MiB
            data += message.chunk
    assert info is not None
    return info, bytes(data), chunks


async def upload(stub, model: str, version: int, data: bytes, **kwargs) -> pb.ModelVersion:
    return await stub.UploadArtifact(aiter_of(upload_messages(model, version, data, **kwargs)))


async def pending(stub, model: str = "m", **kwargs) -> pb.ModelVersion:
    try:
        await stub.CreateModel(pb.CreateModelRequest(name=model))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    return await stub.CreateVersion(version_request(model, **kwargs))


async def assert_untouched(stub, root: Path, model: str, version: int) -> None:
    """A refused upload leaves the version PENDING and nothing on disk."""
    got = await stub.GetVersion(pb.GetVersionRequest(model=model, version=version))
    assert got.status == pb.VERSION_STATUS_PENDING
    assert got.sha256 == "" and got.size_bytes == 0 and not got.HasField("ready_at")
    assert blobs(root) == []
    assert parts(root) == []


async def assert_refused(stub, root: Path, model: str, version: int) -> str:
    """Whole bytes whose content is refused leave the version FAILED, with the reason, and nothing on disk."""
    got = await stub.GetVersion(pb.GetVersionRequest(model=model, version=version))
    assert got.status == pb.VERSION_STATUS_FAILED and got.status_reason
    assert got.sha256 == "" and got.size_bytes == 0 and not got.HasField("ready_at")
    assert blobs(root) == []
    assert parts(root) == []
    return got.status_reason


async def test_round_trip_with_many_chunks(stub, artifact_root) -> None:
    arch, data = big_mlp(700_000)  # about 2.7 MiB
    digest = hashlib.sha256(data).hexdigest()
    v = await pending(stub, architecture=arch)
    ready = await upload(stub, "m", v.version, data, chunk=64 * 1024)
    assert ready.status == pb.VERSION_STATUS_READY
    assert ready.sha256 == digest and ready.size_bytes == len(data)
    assert ready.ready_at.seconds > 0

    info, downloaded, chunks = await download(stub, "m", v.version)
    assert (info.sha256, info.size_bytes, info.format) == (digest, len(data), pb.MODEL_FORMAT_SAFETENSORS)
    assert hashlib.sha256(downloaded).hexdigest() == digest
    assert downloaded == data and chunks >= 3

    # Stored once, under its content address, and no temp file is left.
    assert [p.name for p in blobs(artifact_root)] == [digest]
    assert blobs(artifact_root)[0].parent.name == digest[:2]
    assert parts(artifact_root) == []
    fetched = await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version))
    assert fetched.status == pb.VERSION_STATUS_READY and fetched.sha256 == digest


async def test_same_bytes_twice_are_stored_once(stub, artifact_root) -> None:
    data = safetensors_bytes(7)
    a = await ready_version(stub, "m", data)
    b = await ready_version(stub, "other", data)
    assert a.sha256 == b.sha256
    assert len(blobs(artifact_root)) == 1
    # Deleting one version keeps the blob the other still uses.
    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=a.version))
    assert len(blobs(artifact_root)) == 1
    assert (await download(stub, "other", b.version))[1] == data


async def test_chunk_over_one_mib_is_refused(stub, artifact_root) -> None:
    arch, data = big_mlp(300_000)  # 1.2 MiB
    v = await pending(stub, architecture=arch)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, data, chunk=MiB + 1)
    await assert_untouched(stub, artifact_root, "m", v.version)
    # Exactly 1 MiB is allowed.
    assert (await upload(stub, "m", v.version, data, chunk=MiB)).status == pb.VERSION_STATUS_READY


async def test_checksum_mismatch_creates_nothing(stub, artifact_root) -> None:
    data = safetensors_bytes(1)
    v = await pending(stub)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, data, sha256=hashlib.sha256(b"other bytes").hexdigest())
    await assert_untouched(stub, artifact_root, "m", v.version)
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await download(stub, "m", v.version)
    # After the failed upload, the right bytes go through.
    ready = await upload(stub, "m", v.version, data)
    assert ready.status == pb.VERSION_STATUS_READY and ready.sha256 == hashlib.sha256(data).hexdigest()


async def test_fewer_or_more_bytes_than_declared(stub, artifact_root) -> None:
    data = safetensors_bytes(2)
    v = await pending(stub)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, data, size=len(data) + 1, sha256=hashlib.sha256(data).hexdigest())
    await assert_untouched(stub, artifact_root, "m", v.version)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, data, size=len(data) - 1, sha256=hashlib.sha256(data[:-1]).hexdigest())
    await assert_untouched(stub, artifact_root, "m", v.version)
    assert (await upload(stub, "m", v.version, data)).status == pb.VERSION_STATUS_READY


async def test_malformed_headers(stub, artifact_root) -> None:
    data = safetensors_bytes(3)
    digest = hashlib.sha256(data).hexdigest()
    v = await pending(stub)

    async def refused(code: grpc.StatusCode, messages: list[pb.UploadArtifactRequest]) -> None:
        async with raises_code(code):
            await stub.UploadArtifact(aiter_of(iter(messages)))

    chunk = pb.UploadArtifactRequest(chunk=data)

    def header(**kw) -> pb.UploadArtifactRequest:
        fields = {"model": "m", "version": v.version, "size_bytes": len(data), "sha256": digest, **kw}
        return pb.UploadArtifactRequest(header=pb.ArtifactHeader(**fields))

    await refused(grpc.StatusCode.INVALID_ARGUMENT, [])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [chunk])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(), header(), chunk])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(size_bytes=0)])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(sha256=digest.upper()), chunk])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(sha256="../" + digest[3:]), chunk])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(model="../m"), chunk])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(version=0), chunk])
    await refused(grpc.StatusCode.INVALID_ARGUMENT, [header(format=pb.MODEL_FORMAT_ONNX), chunk])
    await refused(grpc.StatusCode.NOT_FOUND, [header(version=99), chunk])
    await refused(grpc.StatusCode.NOT_FOUND, [header(model="absent"), chunk])
    await assert_untouched(stub, artifact_root, "m", v.version)
    # Declaring the version's own format is fine.
    ready = await stub.UploadArtifact(aiter_of(iter([header(format=pb.MODEL_FORMAT_SAFETENSORS), chunk])))
    assert ready.status == pb.VERSION_STATUS_READY


async def test_size_over_the_cap_is_resource_exhausted(db_url, tmp_path) -> None:
    root = tmp_path / "capped"
    async with serving(db_url, root, max_artifact_bytes=4096) as (_, stub):
        v = await pending(stub)
        too_big = big_mlp(2000)[1]  # 8 KiB of floats
        async with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
            await upload(stub, "m", v.version, too_big)
        await assert_untouched(stub, root, "m", v.version)
        small = safetensors_bytes(0)
        assert len(small) <= 4096
        assert (await upload(stub, "m", v.version, small)).status == pb.VERSION_STATUS_READY


async def test_ready_and_failed_versions_are_immutable(stub, artifact_root) -> None:
    ready = await ready_version(stub, "m")
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await upload(stub, "m", ready.version, safetensors_bytes(99))
    info, data, _ = await download(stub, "m", ready.version)
    assert info.sha256 == ready.sha256 and hashlib.sha256(data).hexdigest() == ready.sha256
    assert len(blobs(artifact_root)) == 1 and parts(artifact_root) == []

    failed = await pending(stub)
    await stub.FailVersion(pb.FailVersionRequest(model="m", version=failed.version, reason="export broke"))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await upload(stub, "m", failed.version, safetensors_bytes(5))
    assert len(blobs(artifact_root)) == 1 and parts(artifact_root) == []


async def test_corrupt_or_missing_blob_is_data_loss(stub, artifact_root) -> None:
    arch, data = big_mlp(400_000)  # 1.5 MiB: the flip lands in the second chunk
    v = await ready_version(stub, "m", data, architecture=arch)
    (blob,) = blobs(artifact_root)
    raw = bytearray(blob.read_bytes())
    raw[len(raw) - 10] ^= 0x01
    blob.write_bytes(bytes(raw))
    async with raises_code(grpc.StatusCode.DATA_LOSS):
        await download(stub, "m", v.version)

    blob.unlink()
    async with raises_code(grpc.StatusCode.DATA_LOSS):
        await download(stub, "m", v.version)

    # A truncated blob too.
    other = await ready_version(stub, "m", safetensors_bytes(11))
    (blob,) = [b for b in blobs(artifact_root) if b.name == other.sha256]
    blob.write_bytes(blob.read_bytes()[:-4])
    async with raises_code(grpc.StatusCode.DATA_LOSS):
        await download(stub, "m", other.version)


async def test_download_errors(stub) -> None:
    v = await pending(stub)
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await download(stub, "m", v.version)
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await download(stub, "m", 42)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await download(stub, "../m", 1)


async def test_client_that_gives_up_mid_upload_leaves_nothing(stub, artifact_root) -> None:
    arch, data = big_mlp(600_000)
    v = await pending(stub, architecture=arch)
    sent_half = asyncio.Event()

    async def half_then_hang():
        messages = list(upload_messages("m", v.version, data, chunk=256 * 1024))
        for message in messages[: len(messages) // 2]:
            yield message
        sent_half.set()
        await asyncio.Event().wait()

    call = stub.UploadArtifact(half_then_hang())
    # A bound on waiting, so a regression fails instead of hanging the suite.
    async with asyncio.timeout(30):
        await sent_half.wait()
        # The server has the temp file open while the stream is alive ...
        while not parts(artifact_root):
            await asyncio.sleep(0.01)
        call.cancel()
        # ... and removes it once the client is gone.
        while parts(artifact_root):
            await asyncio.sleep(0.01)
    await assert_untouched(stub, artifact_root, "m", v.version)
    assert (await upload(stub, "m", v.version, data)).status == pb.VERSION_STATUS_READY
