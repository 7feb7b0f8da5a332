"""Abandoned uploads: a PENDING version nobody feeds becomes FAILED "upload abandoned", its bytes gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from maas.registry.storage.sweeper import sweep_interval
from maas.v1 import registry_pb2 as pb
from tests.helpers import aiter_of, raises_code, ready_version, safetensors_bytes, upload_messages, version_request
from tests.registry.conftest import serving

PENDING_S = 1.0
# The setting, a sweep period, and slack for a busy machine.
BOUND_S = PENDING_S + sweep_interval(PENDING_S) + 10.0
MiB = 1024 * 1024


def parts(root: Path) -> list[Path]:
    return sorted((root / "tmp").glob("*.part")) if (root / "tmp").exists() else []


async def new_pending(stub, model: str = "m") -> pb.ModelVersion:
    try:
        await stub.CreateModel(pb.CreateModelRequest(name=model))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    return await stub.CreateVersion(version_request(model))


async def status_of(stub, model: str, number: int) -> pb.ModelVersion:
    return await stub.GetVersion(pb.GetVersionRequest(model=model, version=number))


async def until_failed(stub, model: str, number: int) -> pb.ModelVersion:
    async with asyncio.timeout(BOUND_S):
        while (got := await status_of(stub, model, number)).status == pb.VERSION_STATUS_PENDING:
            await asyncio.sleep(0.05)
    return got


def half_then_hang(model: str, number: int, sent: asyncio.Event) -> AsyncIterator[pb.UploadArtifactRequest]:
    """An upload that sends half its declared bytes, then nothing more."""

    async def messages() -> AsyncIterator[pb.UploadArtifactRequest]:
        items = list(upload_messages(model, number, b"\1" * (2 * MiB), chunk=256 * 1024))
        for message in items[: len(items) // 2]:
            yield message
        sent.set()
        await asyncio.Event().wait()

    return messages()


def trickle(model: str, number: int, data: bytes, pause: float) -> AsyncIterator[pb.UploadArtifactRequest]:
    """An upload that keeps sending, small chunks `pause` apart, for longer than the setting."""

    async def messages() -> AsyncIterator[pb.UploadArtifactRequest]:
        chunk = max(1, len(data) // 12)
        for message in upload_messages(model, number, data, chunk=chunk):
            yield message
            await asyncio.sleep(pause)

    return messages()


async def test_a_cancelled_upload_fails_its_version(db_url, artifact_root) -> None:
    async with serving(db_url, artifact_root, pending_version_seconds=PENDING_S) as (_, stub):
        ready = await ready_version(stub, "m")
        after = (await stub.GetModel(pb.GetModelRequest(name="m"))).latest_version
        assert after == ready.version
        v = await new_pending(stub)
        sent = asyncio.Event()
        call = stub.UploadArtifact(half_then_hang("m", v.version, sent))
        async with asyncio.timeout(30):
            await sent.wait()
            while not parts(artifact_root):
                await asyncio.sleep(0.01)
        call.cancel()
        events = stub.WatchEvents(pb.WatchEventsRequest(from_latest=True, models=["m"]))

        got = await until_failed(stub, "m", v.version)
        assert (got.status, got.status_reason) == (pb.VERSION_STATUS_FAILED, "upload abandoned")
        assert got.sha256 == "" and got.size_bytes == 0
        assert parts(artifact_root) == []
        # On the event stream like any FailVersion.
        async with asyncio.timeout(30):
            event = await anext(aiter(events))
        events.cancel()
        assert (event.type, event.model, event.version) == (pb.EVENT_TYPE_VERSION_FAILED, "m", v.version)
        # The READY version is untouched, and a FAILED one takes no upload.
        still = await status_of(stub, "m", ready.version)
        assert (still.status, still.sha256) == (pb.VERSION_STATUS_READY, ready.sha256)
        async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
            await stub.UploadArtifact(aiter_of(upload_messages("m", v.version, safetensors_bytes(v.version))))


async def test_a_version_never_uploaded_fails(db_url, artifact_root) -> None:
    async with serving(db_url, artifact_root, pending_version_seconds=PENDING_S) as (_, stub):
        v = await new_pending(stub)
        got = await until_failed(stub, "m", v.version)
        assert got.status_reason == "upload abandoned"


async def test_an_idle_upload_is_ended_and_its_bytes_removed(db_url, artifact_root) -> None:
    async with serving(db_url, artifact_root, pending_version_seconds=PENDING_S) as (_, stub):
        v = await new_pending(stub)
        sent = asyncio.Event()
        call = stub.UploadArtifact(half_then_hang("m", v.version, sent))
        async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
            async with asyncio.timeout(BOUND_S + 5):
                await call
        got = await status_of(stub, "m", v.version)
        assert (got.status, got.status_reason) == (pb.VERSION_STATUS_FAILED, "upload abandoned")
        assert parts(artifact_root) == []


async def test_uploads_that_keep_sending_are_not_failed_by_any_replica(db_url, artifact_root) -> None:
    """Two replicas on one database: one receives slowly; the other's sweeps leave it alone."""
    async with (
        serving(db_url, artifact_root, pending_version_seconds=PENDING_S) as (_, a),
        serving(db_url, artifact_root, pending_version_seconds=PENDING_S) as (_, b),
    ):
        v = await new_pending(a)
        data = safetensors_bytes(v.version)
        # About three times the setting, chunks a quarter of it apart.
        done = await a.UploadArtifact(trickle("m", v.version, data, PENDING_S / 4))
        assert done.status == pb.VERSION_STATUS_READY
        # An abandoned one beside it is failed once, whichever replica gets there first.
        gone = await new_pending(b)
        got = await until_failed(a, "m", gone.version)
        assert got.status_reason == "upload abandoned"
        # Both replicas sweep a few more times; then a marker closes the log to read.
        await asyncio.sleep(sweep_interval(PENDING_S) * 4)
        await b.CreateModel(pb.CreateModelRequest(name="marker"))
        history = b.WatchEvents(pb.WatchEventsRequest(after_id=0))
        failed = []
        async with asyncio.timeout(30):
            async for event in history:
                if event.type == pb.EVENT_TYPE_VERSION_FAILED:
                    failed.append((event.model, event.version))
                if event.model == "marker":
                    break
        history.cancel()
        assert failed == [("m", gone.version)]
