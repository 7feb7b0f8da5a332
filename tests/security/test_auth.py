"""With auth on, every RPC refuses callers without the scope it needs, and nothing changes.

The RPCs are enumerated from the service descriptors; mutations are sent
with valid payloads (a delete of a real model, an upload for a real pending
version, ...), so a missing check would show as a changed row or file.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select

from maas.common.auth import REQUIRED_SCOPE
from maas.common.server import start_server
from maas.common.sql import Database
from maas.registry.app import RegistryApp
from maas.registry.db.schema import Base
from maas.trainer.app import TrainerApp
from maas.v1 import registry_pb2 as rpb
from maas.v1 import registry_pb2_grpc, trainer_pb2_grpc
from maas.v1 import trainer_pb2 as tpb
from tests.conftest import registry_settings
from tests.helpers import aiter_of, safetensors_bytes, upload_messages, version_request
from tests.trainer.conftest import digits_spec, trainer_settings

ADMIN, WRITE, READ = "admin-token-0123456789", "write-token-0123456789", "read-token-01234567890"
REPLICA = "replica-token-0123456789"
TOKENS = f"{ADMIN}:admin,{WRITE}:write,{READ}:read,{REPLICA}:replica"
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def call(
    channel: grpc.aio.Channel, method: Any, payload: bytes | list[bytes], token: str | None
) -> grpc.StatusCode:
    """Invoke one RPC generically (raw bytes) and return its status code."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    md = bearer(token)
    try:
        if method.client_streaming:
            items = payload if isinstance(payload, list) else [payload]
            if method.server_streaming:
                async for _ in channel.stream_stream(path)(aiter_of(iter(items)), metadata=md, timeout=5):
                    break
            else:
                await channel.stream_unary(path)(aiter_of(iter(items)), metadata=md, timeout=5)
        elif method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=md, timeout=2)
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(path)(payload, metadata=md, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_rpc_has_a_required_scope() -> None:
    import subprocess
    import sys

    # The inference descriptors come from a separate process (tritonclient registers the same symbols).
    script = (
        "from maas.oip import grpc_service_pb2 as g\n"
        "print('\\n'.join(m.full_name for m in g.DESCRIPTOR.services_by_name['GRPCInferenceService'].methods))"
    )
    names = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    paths = [f"/inference.GRPCInferenceService/{n.rsplit('.', 1)[1]}" for n in names]
    for svc in (rpb.DESCRIPTOR.services_by_name["RegistryService"], tpb.DESCRIPTOR.services_by_name["TrainerService"]):
        paths += [f"/{svc.full_name}/{m.name}" for m in svc.methods]
    missing = [p for p in paths if p not in REQUIRED_SCOPE]
    assert missing == []
    assert len(paths) == 31 + 7 + 12


def snapshot(db_url: str, artifact_root: Path) -> dict[str, Any]:
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            counts = {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in Base.metadata.sorted_tables
            }
            rows = {
                "models": conn.exec_driver_sql("SELECT name, description FROM registered_models ORDER BY name").all(),
                "versions": conn.exec_driver_sql(
                    "SELECT number, status, archived, description FROM model_versions ORDER BY number"
                ).all(),
                "aliases": conn.exec_driver_sql("SELECT name, version_number FROM aliases ORDER BY name").all(),
                "runs": conn.exec_driver_sql("SELECT run_id, status FROM runs").all(),
                "deployments": conn.exec_driver_sql("SELECT name, generation FROM deployments").all(),
            }
    finally:
        db.dispose()
    files = sorted(str(p.relative_to(artifact_root)) for p in artifact_root.rglob("*") if p.is_file())
    return {"counts": counts, "rows": rows, "files": files}


def served(ref: str) -> rpb.DeploymentSpec:
    return rpb.DeploymentSpec(targets=[rpb.DeploymentTarget(ref=ref, weight=100)])


@pytest.fixture
async def secured(db_url: str, artifact_root: Path) -> AsyncIterator[tuple[str, dict[str, bytes | list[bytes]]]]:
    settings = registry_settings(db_url, artifact_root, auth_tokens=TOKENS)
    running = await start_server(settings, RegistryApp(settings))
    md = bearer(ADMIN)
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        await stub.CreateModel(rpb.CreateModelRequest(name="m"), metadata=md)
        for _ in range(2):
            v = await stub.CreateVersion(version_request("m"), metadata=md)
            await stub.UploadArtifact(
                aiter_of(upload_messages("m", v.version, safetensors_bytes(v.version))), metadata=md
            )
        await stub.SetAlias(rpb.SetAliasRequest(model="m", alias="production", version=1), metadata=md)
        pending = await stub.CreateVersion(version_request("m"), metadata=md)
        run = await stub.CreateRun(rpb.CreateRunRequest(name="r"), metadata=md)
        await stub.CreateDeployment(rpb.CreateDeploymentRequest(name="d", spec=served("m@production")), metadata=md)
    data = safetensors_bytes(99)
    upload = [m.SerializeToString() for m in upload_messages("m", pending.version, data)]
    requests: dict[str, bytes | list[bytes]] = {
        "CreateModel": rpb.CreateModelRequest(name="intruder").SerializeToString(),
        "UpdateModel": rpb.UpdateModelRequest(name="m", description="defaced").SerializeToString(),
        "DeleteModel": rpb.DeleteModelRequest(name="m", force=True).SerializeToString(),
        "CreateVersion": version_request("m").SerializeToString(),
        "UpdateVersion": rpb.UpdateVersionRequest(model="m", version=1, description="x").SerializeToString(),
        "FailVersion": rpb.FailVersionRequest(model="m", version=pending.version, reason="x").SerializeToString(),
        "ArchiveVersion": rpb.ArchiveVersionRequest(model="m", version=2, archived=True).SerializeToString(),
        "DeleteVersion": rpb.DeleteVersionRequest(model="m", version=1, force=True).SerializeToString(),
        "SetAlias": rpb.SetAliasRequest(model="m", alias="production", version=2).SerializeToString(),
        "DeleteAlias": rpb.DeleteAliasRequest(model="m", alias="production").SerializeToString(),
        "CreateRun": rpb.CreateRunRequest(name="x").SerializeToString(),
        "LogParams": rpb.LogParamsRequest(run_id=run.run_id, params={"k": "v"}).SerializeToString(),
        "LogMetrics": rpb.LogMetricsRequest(
            run_id=run.run_id, series=[rpb.MetricSeries(key="loss", steps=[1], values=[0.5])]
        ).SerializeToString(),
        "FinishRun": rpb.FinishRunRequest(run_id=run.run_id, status=rpb.RUN_STATUS_FAILED).SerializeToString(),
        "UploadArtifact": upload,
        "GetModel": rpb.GetModelRequest(name="m").SerializeToString(),
        "GetVersion": rpb.GetVersionRequest(model="m", version=1).SerializeToString(),
        "DownloadArtifact": rpb.DownloadArtifactRequest(model="m", version=1).SerializeToString(),
        "GetRun": rpb.GetRunRequest(run_id=run.run_id).SerializeToString(),
        "GetMetricHistory": rpb.GetMetricHistoryRequest(run_id=run.run_id, key="loss").SerializeToString(),
        "ResolveVersion": rpb.ResolveVersionRequest(ref="m@production").SerializeToString(),
        "CreateDeployment": rpb.CreateDeploymentRequest(name="e", spec=served("m/2")).SerializeToString(),
        "UpdateDeployment": rpb.UpdateDeploymentRequest(name="d", spec=served("m/2")).SerializeToString(),
        "DeleteDeployment": rpb.DeleteDeploymentRequest(name="d").SerializeToString(),
        "ReportDeploymentStatus": rpb.ReportDeploymentStatusRequest(
            deployment="d", status=rpb.ReplicaStatus(replica="intruder", generation=1)
        ).SerializeToString(),
        "GetDeployment": rpb.GetDeploymentRequest(name="d").SerializeToString(),
    }
    yield running.address, requests
    await running.stop(0)


async def test_registry_refuses_missing_wrong_and_weak_tokens(secured, db_url: str, artifact_root: Path) -> None:
    address, requests = secured
    before = snapshot(db_url, artifact_root)
    service = rpb.DESCRIPTOR.services_by_name["RegistryService"]
    async with grpc.aio.insecure_channel(address) as channel:
        for method in service.methods:
            payload = requests.get(method.name, b"")
            scope = REQUIRED_SCOPE[f"/{service.full_name}/{method.name}"]
            assert await call(channel, method, payload, None) == grpc.StatusCode.UNAUTHENTICATED, method.name
            assert await call(channel, method, payload, "not-a-token-but-long") == grpc.StatusCode.UNAUTHENTICATED
            as_reader = await call(channel, method, payload, READ)
            if scope == "read":
                assert as_reader not in DENIED, method.name
            else:
                assert as_reader == grpc.StatusCode.PERMISSION_DENIED, method.name
            if scope == "admin":
                assert await call(channel, method, payload, WRITE) == grpc.StatusCode.PERMISSION_DENIED
        # Health stays open for orchestrators.
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert snapshot(db_url, artifact_root) == before


async def test_tokens_grant_their_scope(secured) -> None:
    address, _ = secured
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        assert (await stub.GetModel(rpb.GetModelRequest(name="m"), metadata=bearer(READ))).name == "m"
        await stub.CreateModel(rpb.CreateModelRequest(name="by-writer"), metadata=bearer(WRITE))
        await stub.DeleteModel(rpb.DeleteModelRequest(name="by-writer"), metadata=bearer(ADMIN))


async def test_a_replica_token_reads_and_reports_and_changes_nothing_else(secured) -> None:
    """What an inference replica's registry token needs (MAAS_INFERENCE_REGISTRY_TOKEN): no more."""
    address, requests = secured
    service = rpb.DESCRIPTOR.services_by_name["RegistryService"]
    async with grpc.aio.insecure_channel(address) as channel:
        for method in service.methods:
            payload = requests.get(method.name, b"")
            scope = REQUIRED_SCOPE[f"/{service.full_name}/{method.name}"]
            code = await call(channel, method, payload, REPLICA)
            if scope in ("read", "replica"):
                assert code not in DENIED, method.name
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, method.name
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        status = rpb.ReplicaStatus(replica="pod-1", generation=1)
        report = rpb.ReportDeploymentStatusRequest(deployment="d", status=status)
        await stub.ReportDeploymentStatus(report, metadata=bearer(REPLICA))
        shown = await stub.GetDeployment(rpb.GetDeploymentRequest(name="d"), metadata=bearer(REPLICA))
        # Both its reports are stored (the walk above sent one too); nothing else it sent changed anything.
        assert {r.replica for r in shown.replicas} == {"intruder", "pod-1"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SetAlias(rpb.SetAliasRequest(model="m", alias="production", version=2), metadata=bearer(REPLICA))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "a write token" in (info.value.details() or "")


async def test_a_refusal_names_the_scope_it_needs(secured) -> None:
    address, _ = secured
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.DeleteModel(rpb.DeleteModelRequest(name="m"), metadata=bearer(WRITE))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "an admin token" in (info.value.details() or "")


async def test_trainer_refuses_weak_tokens(sqlite_registry, tmp_path: Path) -> None:
    settings = trainer_settings(tmp_path / "t", sqlite_registry.address, auth_tokens=TOKENS, warm_workers=0)
    running = await start_server(settings, TrainerApp(settings))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            job = await stub.SubmitJob(tpb.SubmitJobRequest(spec=digits_spec(epochs=1)), metadata=bearer(WRITE))
            service = tpb.DESCRIPTOR.services_by_name["TrainerService"]
            payloads = {
                "SubmitJob": tpb.SubmitJobRequest(spec=digits_spec(epochs=1)).SerializeToString(),
                "CancelJob": tpb.CancelJobRequest(job_id=job.job_id).SerializeToString(),
                "GetJob": tpb.GetJobRequest(job_id=job.job_id).SerializeToString(),
                "WatchJob": tpb.WatchJobRequest(job_id=job.job_id).SerializeToString(),
            }
            for method in service.methods:
                payload = payloads.get(method.name, b"")
                scope = REQUIRED_SCOPE[f"/{service.full_name}/{method.name}"]
                assert await call(channel, method, payload, None) == grpc.StatusCode.UNAUTHENTICATED
                reader = await call(channel, method, payload, READ)
                assert (reader in DENIED) == (scope != "read"), method.name
            listed = await stub.ListJobs(tpb.ListJobsRequest(), metadata=bearer(READ))
            assert [j.job_id for j in listed.jobs] == [job.job_id]
            assert not listed.jobs[0].reason.startswith("cancel")
    finally:
        await running.stop(0)


def test_weak_or_malformed_token_configuration_is_refused(tmp_path: Path) -> None:
    from maas.common.auth import TokenError, load_tokens

    for bad in ["short:admin", f"{ADMIN}:root", f"{ADMIN}"]:
        with pytest.raises(TokenError):
            load_tokens(bad, None)
    file = tmp_path / "tokens"
    file.write_text(f"# ops team\n{ADMIN} admin\n\n{READ} read  # dashboards\n")
    assert load_tokens(None, file) == {ADMIN: "admin", READ: "read"}
    assert hashlib.sha256(ADMIN.encode()).hexdigest()  # tokens are kept only as digests (see AuthInterceptor)
