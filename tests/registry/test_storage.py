"""The artifact store against a real full disk and a real clock: refusals, nothing left behind, sweeping."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from maas.v1 import registry_pb2 as pb
from tests.helpers import big_mlp, raises_code, safetensors_bytes, upload_messages
from tests.registry.conftest import serving
from tests.registry.test_artifacts import blobs, parts, pending, upload

MiB = 1024 * 1024


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode(errors='replace').strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An artifact root on a real 20 MiB file system of its own."""
    mount = tmp_path / "disk"
    _mount_tmpfs(mount, "size=20m")
    try:
        yield mount / "artifacts"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def few_inodes(tmp_path: Path) -> Iterator[Path]:
    """An artifact root on a file system with room for bytes but for few files or directories."""
    mount = tmp_path / "inodes"
    # The mount point, artifacts/, tmp/, blobs/, blobs/sha256/ and one .part file:
    # the blob's fan-out directory is the first thing that does not fit.
    _mount_tmpfs(mount, "size=20m,nr_inodes=6")
    try:
        yield mount / "artifacts"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_a_disk_that_fills_mid_upload_is_resource_exhausted(db_url, small_disk) -> None:
    async with serving(db_url, small_disk) as (_, stub):
        arch, data = big_mlp(3 * MiB, seed=1)
        first = await pending(stub, architecture=arch)
        assert (await upload(stub, "m", first.version, data)).status == (pb.VERSION_STATUS_READY)  # 12 MiB of 20

        # 10 MiB more does not fit: the write fails partway, with bytes still buffered.
        arch, fits = big_mlp(6 * MiB // 4, seed=3)
        second = await pending(stub, architecture=arch)
        for chunk in (MiB, 64 * 1024 + 3):
            async with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
                await upload(stub, "m", second.version, big_mlp(10 * MiB // 4, seed=2)[1], chunk=chunk)
            assert parts(small_disk) == [] and len(blobs(small_disk)) == 1
        got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=second.version))
        assert got.status == pb.VERSION_STATUS_PENDING

        # Nothing of the refused upload holds space: one that fits goes through.
        assert (await upload(stub, "m", second.version, fits)).status == pb.VERSION_STATUS_READY
        assert parts(small_disk) == [] and len(blobs(small_disk)) == 2


async def test_no_room_for_the_blob_directory_is_resource_exhausted(db_url, few_inodes) -> None:
    async with serving(db_url, few_inodes) as (_, stub):
        v = await pending(stub)
        async with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
            await upload(stub, "m", v.version, safetensors_bytes(0))
        assert parts(few_inodes) == [] and blobs(few_inodes) == []
        got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version))
        assert got.status == pb.VERSION_STATUS_PENDING


async def test_a_full_disk_at_fsync_is_resource_exhausted(db_url, artifact_root, monkeypatch) -> None:
    """Some file systems allocate late and report ENOSPC only when the bytes are forced out."""
    part_fds: set[int] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).suffix == ".part":
            part_fds.add(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    async with serving(db_url, artifact_root) as (_, stub):
        v = await pending(stub)
        monkeypatch.setattr(os, "fsync", fsync)
        async with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
            await upload(stub, "m", v.version, safetensors_bytes(0))
        assert part_fds, "the upload reached its fsync"
        assert parts(artifact_root) == [] and blobs(artifact_root) == []
        monkeypatch.undo()
        assert (await upload(stub, "m", v.version, safetensors_bytes(0))).status == pb.VERSION_STATUS_READY


# ------------------------------------------------------------------ sweep


async def test_abandoned_upload_is_swept_soon_after_the_stale_setting(db_url, artifact_root) -> None:
    stale = 1.0
    async with serving(db_url, artifact_root, stale_upload_seconds=stale) as (_, stub):
        # A partial upload its writer abandoned (a crashed replica, a killed process).
        tmp = artifact_root / "tmp"
        abandoned = tmp / f"{uuid.uuid4().hex}.part"
        abandoned.write_bytes(b"\0" * MiB)
        # Gone within the setting plus a sweep period of at most as long again,
        # and slack for a busy machine.
        async with asyncio.timeout(2 * stale + 5.0):
            while abandoned.exists():
                await asyncio.sleep(0.05)
        # An upload in progress is not swept from under its writer.
        v = await pending(stub)
        assert (await upload(stub, "m", v.version, safetensors_bytes(0))).status == pb.VERSION_STATUS_READY


async def test_the_sweep_runs_at_start(db_url, artifact_root) -> None:
    tmp = artifact_root / "tmp"
    tmp.mkdir(parents=True)
    old = tmp / f"{uuid.uuid4().hex}.part"
    old.write_bytes(b"\0" * 1024)
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    # The default setting (an hour): a period that long must not delay the first sweep.
    async with serving(db_url, artifact_root, stale_upload_seconds=600.0):
        async with asyncio.timeout(30):
            while old.exists():
                await asyncio.sleep(0.05)


async def test_an_upload_whose_client_pauses_is_not_swept(db_url, artifact_root) -> None:
    arch, data = big_mlp(600_000)
    messages = list(upload_messages("m", 1, data, chunk=256 * 1024))
    half = len(messages) // 2
    resume = asyncio.Event()

    async def pausing():
        for message in messages[:half]:
            yield message
        await resume.wait()
        for message in messages[half:]:
            yield message

    async with serving(db_url, artifact_root, stale_upload_seconds=1.0) as (_, stub):
        await pending(stub, architecture=arch)
        call = stub.UploadArtifact(pausing())
        async with asyncio.timeout(30):
            while not parts(artifact_root):
                await asyncio.sleep(0.01)
            (live,) = parts(artifact_root)
            # Idle for an hour, as far as its mtime tells; beside it, an abandoned one.
            hour_ago = time.time() - 3600
            os.utime(live, (hour_ago, hour_ago))
            abandoned = artifact_root / "tmp" / f"{uuid.uuid4().hex}.part"
            abandoned.write_bytes(b"\0")
            os.utime(abandoned, (hour_ago, hour_ago))
            while abandoned.exists():  # a sweep has run since
                await asyncio.sleep(0.05)
        assert live.exists()
        resume.set()
        assert (await call).status == pb.VERSION_STATUS_READY
        assert parts(artifact_root) == []
