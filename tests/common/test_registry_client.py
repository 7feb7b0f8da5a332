"""maas.common.clients.registry: retries only where safe, deadlines everywhere, typed errors."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from maas.common import errors
from maas.common.clients.base import ChannelConfig, RetryPolicy
from maas.common.clients.registry import BlockingRegistryClient, RegistryClient
from maas.v1 import registry_pb2 as pb
from maas.v1 import registry_pb2_grpc
from tests.helpers import MLP_ARCH, big_mlp, safetensors_bytes, signature
from tests.registry.conftest import serving

FAST_RETRY = RetryPolicy(attempts=5, initial_backoff=0.01, max_backoff=0.05)
WAIT = 60.0


# ------------------------------------------ a scripted server, to count ---


class Scripted(registry_pb2_grpc.RegistryServiceServicer):
    """Answers every call with one status and records how often, and with what deadline."""

    def __init__(self, code: grpc.StatusCode, delay: float = 0.0) -> None:
        self.code = code
        self.delay = delay
        self.calls: dict[str, int] = {}
        self.deadlines: dict[str, float | None] = {}

    async def _answer(self, name: str, context: aio.ServicerContext) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.deadlines[name] = context.time_remaining()
        if self.delay:
            await asyncio.sleep(self.delay)
        await context.abort(self.code, f"scripted {self.code.name}")

    def __getattribute__(self, name: str):
        if name[:1].isupper():

            async def unary(request, context):
                if hasattr(request, "__aiter__"):
                    async for _ in request:
                        pass
                await self._answer(name, context)

            async def streaming(request, context):
                await self._answer(name, context)
                yield  # pragma: no cover - never reached

            return streaming if name in ("DownloadArtifact", "WatchEvents") else unary
        return super().__getattribute__(name)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    servicer = Scripted(grpc.StatusCode.UNAVAILABLE)
    server = aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


async def every_call(client: RegistryClient, tmp_path: Path) -> None:
    """One of each client method (each is expected to fail)."""
    artifact = tmp_path / "w.safetensors"
    artifact.write_bytes(safetensors_bytes())
    calls = [
        lambda: client.create_model("m"),
        lambda: client.get_model("m"),
        lambda: client.list_models(),
        lambda: client.delete_model("m"),
        lambda: client.create_version("m", format=pb.MODEL_FORMAT_SAFETENSORS, architecture=MLP_ARCH),
        lambda: client.get_version("m", 1),
        lambda: client.resolve("m@production"),
        lambda: client.list_versions(pb.ListVersionsRequest(model="m")),
        lambda: client.fail_version("m", 1, "x"),
        lambda: client.set_alias("m", "production", 1),
        lambda: client.delete_alias("m", "production"),
        lambda: client.create_run(),
        lambda: client.get_run("0" * 32),
        lambda: client.log_params("0" * 32, {"a": "1"}),
        lambda: client.log_metrics("0" * 32, [pb.MetricSeries(key="k", steps=[0], values=[1.0])]),
        lambda: client.finish_run("0" * 32, pb.RUN_STATUS_FINISHED),
        lambda: client.metric_history("0" * 32, "k"),
        lambda: client.upload_artifact("m", 1, artifact),
        lambda: client.download_artifact("m", 1, tmp_path / "out" / "w.safetensors"),
    ]
    for call in calls:
        with pytest.raises(errors.MaasError):
            await call()


IDEMPOTENT = {
    "GetModel",
    "ListModels",
    "GetVersion",
    "ResolveVersion",
    "ListVersions",
    "SetAlias",
    "GetRun",
    "LogParams",
    "FinishRun",
    "GetMetricHistory",
}


async def test_only_idempotent_calls_are_retried(scripted, tmp_path) -> None:
    servicer, address = scripted
    async with RegistryClient(ChannelConfig(address, timeout=5), FAST_RETRY) as client:
        await every_call(client, tmp_path)
    retried = {name for name, n in servicer.calls.items() if n == FAST_RETRY.attempts}
    once = {name for name, n in servicer.calls.items() if n == 1}
    assert retried == IDEMPOTENT
    # Creates, deletes, failing a version, logging metrics, artifacts: sent exactly once.
    assert once == set(servicer.calls) - IDEMPOTENT
    assert {"CreateModel", "CreateVersion", "CreateRun", "LogMetrics", "UploadArtifact", "DeleteModel"} <= once


async def test_every_call_carries_a_deadline(scripted, tmp_path) -> None:
    servicer, address = scripted
    async with RegistryClient(ChannelConfig(address, timeout=7), FAST_RETRY) as client:
        await every_call(client, tmp_path)
    assert len(servicer.deadlines) == 19
    for name, remaining in servicer.deadlines.items():
        assert remaining is not None, name
        # Artifact streams get a longer budget than the default (+1 s: clock rounding on the wire).
        assert 0 < remaining <= (301 if "Artifact" in name else 8), (name, remaining)


async def test_a_slow_server_is_deadline_exceeded(tmp_path) -> None:
    servicer = Scripted(grpc.StatusCode.OK, delay=5)
    server = aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with RegistryClient(ChannelConfig(f"127.0.0.1:{port}", timeout=0.2), FAST_RETRY) as client:
            with pytest.raises(errors.DeadlineExceeded):
                await client.create_model("m")
            with pytest.raises(errors.DeadlineExceeded):
                await client.get_model("m")
    finally:
        await server.stop(0)
    assert servicer.calls == {"CreateModel": 1, "GetModel": FAST_RETRY.attempts}


async def test_reads_ride_through_a_server_that_starts_late(db_url, tmp_path, held_port) -> None:
    port = held_port  # the registry binds it later
    patient = RetryPolicy(attempts=200, initial_backoff=0.05, max_backoff=0.2)
    async with RegistryClient(ChannelConfig(f"127.0.0.1:{port}", timeout=5), patient) as client:
        # Nothing listens yet: a create fails at once, it is never retried.
        with pytest.raises(errors.Unavailable):
            await client.create_model("m")
        read = asyncio.ensure_future(client.list_models())
        # Let the read fail at least once before the server exists.
        async with asyncio.timeout(WAIT):
            while client.channel.get_state() != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                await asyncio.sleep(0.01)
        assert not read.done()
        async with serving(db_url, tmp_path / "artifacts", port=port) as (_, stub):
            async with asyncio.timeout(WAIT):
                listed = await read
            assert list(listed.models) == []
            # The create that failed was never sent.
            assert list((await stub.ListModels(pb.ListModelsRequest())).models) == []


# ---------------------------------------------- against the real registry ---


async def test_errors_arrive_as_domain_classes(client, tmp_path) -> None:
    with pytest.raises(errors.NotFound):
        await client.get_model("absent")
    with pytest.raises(errors.InvalidArgument):
        await client.create_model("../etc")
    await client.create_model("m")
    with pytest.raises(errors.AlreadyExists):
        await client.create_model("m")
    version = await client.create_version(
        "m", format=pb.MODEL_FORMAT_SAFETENSORS, architecture=MLP_ARCH, signature=signature()
    )
    with pytest.raises(errors.FailedPrecondition):
        await client.set_alias("m", "production", version.version)
    with pytest.raises(errors.FailedPrecondition):
        await client.download_artifact("m", version.version, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(errors.InvalidArgument):
        await client.upload_artifact("m", version.version, bad)
    # ensure_model is create-or-get.
    assert (await client.ensure_model("m")).name == "m"
    assert (await client.ensure_model("fresh")).name == "fresh"


async def test_artifacts_runs_and_history(client, tmp_path) -> None:
    await client.create_model("m")
    run = await client.create_run(name="r", job_id="job-1", params={"lr": "0.1"})
    points = 25_000
    series = pb.MetricSeries(key="loss", steps=list(range(points)), values=[float(i) for i in range(points)])
    assert await client.log_metrics(run.run_id, [series]) == points
    history = await client.metric_history(run.run_id, "loss", page_size=1000)
    assert list(history.steps) == list(range(points)) and history.values[-1] == points - 1
    await client.finish_run(run.run_id, pb.RUN_STATUS_FINISHED)

    arch, weights = big_mlp(500_000, seed=3)  # about 2 MiB: several chunks
    version = await client.create_version(
        "m", format=pb.MODEL_FORMAT_SAFETENSORS, architecture=arch, signature=signature(), run_id=run.run_id
    )
    assert dict(version.metrics) == {"loss": points - 1}
    source = tmp_path / "w.safetensors"
    source.write_bytes(weights)
    ready = await client.upload_artifact("m", version.version, source)
    assert ready.status == pb.VERSION_STATUS_READY
    dest = tmp_path / "downloads" / "w.safetensors"
    info = await client.download_artifact("m", version.version, dest)
    assert info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest() == ready.sha256
    assert dest.read_bytes() == source.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left beside it
    await client.set_alias("m", "production", version.version)
    assert (await client.resolve("m@production")).version == version.version


async def test_blocking_client_from_synchronous_code(registry) -> None:
    def work() -> tuple[str, int]:
        client = BlockingRegistryClient(ChannelConfig(registry.address, timeout=10))
        try:
            model = client.create_model("sync")
            try:
                client.get_model("absent")
            except errors.NotFound:
                pass
            else:
                raise AssertionError("expected NotFound")
            return model.name, client.get_model("sync").latest_version
        finally:
            client.close()

    assert await asyncio.to_thread(work) == ("sync", 0)
