"""Faults the registry must ride out: its database going away, a full disk, a corrupt blob.

The database outage uses a private PostgreSQL cluster started for the test
(the shared one stays untouched); the full disk is a small tmpfs mounted
as the artifact root.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.common.server import start_server
from maas.registry.app import RegistryApp
from maas.v1 import registry_pb2 as rpb
from maas.v1 import registry_pb2_grpc
from tests.conftest import registry_settings
from tests.helpers import (
    aiter_of,
    big_mlp,
    raises_code,
    safetensors_bytes,
    unused_port,
    upload_messages,
    version_request,
)

PG_BIN = (
    Path("/usr/lib/postgresql")
    / (sorted(os.listdir("/usr/lib/postgresql"))[-1] if Path("/usr/lib/postgresql").exists() else "")
    / "bin"
)


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, text=True)


class PrivatePostgres:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.directory),
            "-o",
            f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1",
            "-w",
            "-l",
            str(self.directory / "log"),
            "start",
        )

    def stop(self) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Outside pytest's private (0700, root-owned) tree: PostgreSQL runs as its own user.
    base = Path(tempfile.mkdtemp(prefix="maas-pg-"))
    directory = base / "cluster"
    shutil.chown(base, "postgres")
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(directory), "-A", "trust", "-U", "postgres", "--no-sync")
    pg = PrivatePostgres(directory, unused_port())  # PostgreSQL needs its port up front
    pg.start()
    yield pg
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(directory), "-m", "immediate", "stop"],
        capture_output=True,
    )
    shutil.rmtree(base, ignore_errors=True)


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="maas.v1.RegistryService")
    )
    return int(reply.status)


async def _eventually(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def test_database_outage_and_recovery_without_restart(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    settings = registry_settings(private_postgres.url, tmp_path / "artifacts", auto_migrate=True, health_interval=0.3)
    running = await start_server(settings, RegistryApp(settings))
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            await stub.CreateModel(rpb.CreateModelRequest(name="before"))
            assert await _health(channel) == serving

            private_postgres.stop()
            await _eventually(lambda: _is(channel, not_serving))
            for call in (
                stub.GetModel(rpb.GetModelRequest(name="before")),
                stub.CreateModel(rpb.CreateModelRequest(name="during")),
                stub.ListVersions(rpb.ListVersionsRequest(model="before")),
            ):
                async with raises_code(grpc.StatusCode.UNAVAILABLE):
                    await call

            private_postgres.start()
            await _eventually(lambda: _is(channel, serving))
            assert (await stub.GetModel(rpb.GetModelRequest(name="before"))).name == "before"
            await stub.CreateModel(rpb.CreateModelRequest(name="after"))
            names = [m.name for m in (await stub.ListModels(rpb.ListModelsRequest())).models]
            assert names == ["after", "before"]  # nothing half-created during the outage
    finally:
        await running.stop(0)


async def _is(channel: grpc.aio.Channel, status: int) -> bool:
    return await _health(channel) == status


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


async def test_full_artifact_disk_is_resource_exhausted_and_leaves_nothing(db_url: str, tiny_disk: Path) -> None:
    settings = registry_settings(db_url, tiny_disk)
    running = await start_server(settings, RegistryApp(settings))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            await stub.CreateModel(rpb.CreateModelRequest(name="m"))
            big = await stub.CreateVersion(version_request("m"))
            payload = big_mlp(500_000)[1]  # ~2 MB: more than the disk holds
            async with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
                await stub.UploadArtifact(aiter_of(upload_messages("m", big.version, payload)))
            version = await stub.GetVersion(rpb.GetVersionRequest(model="m", version=big.version))
            assert version.status == rpb.VERSION_STATUS_PENDING
            assert [p for p in tiny_disk.rglob("*") if p.is_file()] == []
            # The disk is usable again at once for what fits.
            small = await stub.CreateVersion(version_request("m"))
            done = await stub.UploadArtifact(aiter_of(upload_messages("m", small.version, safetensors_bytes())))
            assert done.status == rpb.VERSION_STATUS_READY
    finally:
        await running.stop(0)
