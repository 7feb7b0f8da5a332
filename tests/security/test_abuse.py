"""Hostile input: traversal and URL forms, code-carrying payloads, malformed files, smuggled specs.

Every refusal is INVALID_ARGUMENT, nothing is written outside the artifact
root, no payload ever runs (the canary file its code would create never
appears), and no error message carries a path, DSN, token or trace.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import grpc
import pytest
import torch

from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as tpb
from tests.helpers import aiter_of, raises_code, safetensors_bytes, upload_messages, version_request
from tests.trainer.conftest import digits_spec

HOSTILE = [
    "../",
    "../../etc/passwd",
    "..\\..\\windows",
    "%2e%2e%2f",
    "..%252f",
    "file:///etc/",
    "//proc/self/root",
    "a#/../",
    "a\x00b",
    "x" * 10_000,
    "http://evil.example/x",
    "~/.ssh",
    " ",
    "",
]


class Canary:
    """Unpickling this creates a file: proof that something deserialized it."""

    path = ""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.path),))


def code_payloads(canary: Path) -> dict[str, bytes]:
    Canary.path = str(canary)
    payload = pickle.dumps(Canary())
    torch_save = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, torch_save)
    script = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    exported = io.BytesIO()
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), exported)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", payload)
    return {
        "pickle": payload,
        "pickle protocol 0": pickle.dumps(Canary(), protocol=0),
        "gzip pickle": gzip.compress(payload),
        "torch.save": torch_save.getvalue(),
        "torchscript": script.getvalue(),
        "torch.export": exported.getvalue(),
        "zip with a pickle": zipped.getvalue(),
    }


def malformed_safetensors() -> dict[str, bytes]:
    def raw(header: dict[str, object], data: bytes, length: int | None = None) -> bytes:
        blob = json.dumps(header).encode()
        return struct.pack("<Q", len(blob) if length is None else length) + blob + data

    tensor = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    return {
        "header past the end": raw({"w": tensor}, b"\0" * 8, length=10**9),
        "overlapping offsets": raw(
            {"a": tensor, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12
        ),
        "offsets past the data": raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}, b"\0" * 8),
        "huge shape": raw({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8),
        "negative dim": raw({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "unknown dtype": raw({"w": {"dtype": "PYOBJ", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "not json": struct.pack("<Q", 4) + b"{{{{" + b"\0" * 8,
        "truncated": b"\x08\0\0",
    }


def assert_clean(details: str, *secrets: str) -> None:
    assert "Traceback" not in details and 'File "' not in details
    for secret in secrets:
        assert secret not in details, f"leaked {secret!r} in {details!r}"


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def test_hostile_identifiers_are_refused(stub, artifact_root: Path, tmp_path: Path) -> None:
    await stub.CreateModel(rpb.CreateModelRequest(name="ok"))
    calls = []
    for value in HOSTILE:
        calls += [
            ("name", stub.CreateModel(rpb.CreateModelRequest(name=value))),
            ("get", stub.GetModel(rpb.GetModelRequest(name=value))),
            ("version", stub.CreateVersion(version_request(value))),
            ("alias", stub.SetAlias(rpb.SetAliasRequest(model="ok", alias=value, version=1))),
            ("ref@", stub.ResolveVersion(rpb.ResolveVersionRequest(ref=f"ok@{value}"))),
            ("ref/", stub.ResolveVersion(rpb.ResolveVersionRequest(ref=f"ok/{value}"))),
            ("ref", stub.ResolveVersion(rpb.ResolveVersionRequest(ref=value))),
            ("run", stub.GetRun(rpb.GetRunRequest(run_id=value))),
        ]
        if value:
            calls += [
                ("tag", stub.CreateModel(rpb.CreateModelRequest(name="t", tags={value: "v"}))),
                ("token", stub.ListModels(rpb.ListModelsRequest(page={"page_token": value}))),
            ]
    for what, coro in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await coro
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, info.value.details())
        assert_clean(info.value.details(), str(artifact_root), str(tmp_path))
    for number in (-1, 0, -(2**62)):
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.GetVersion(rpb.GetVersionRequest(model="ok", version=number))
    # Upload headers with hostile names create nothing anywhere.
    before = files_under(artifact_root)
    for value in HOSTILE[:9]:
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.UploadArtifact(aiter_of(upload_messages(value, 1, safetensors_bytes())))
    assert files_under(artifact_root) == before
    assert (await stub.ListModels(rpb.ListModelsRequest())).models[0].name == "ok"


async def test_code_payloads_are_refused_and_never_run(stub, artifact_root: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    await stub.CreateModel(rpb.CreateModelRequest(name="m"))
    for label, payload in code_payloads(canary).items():
        for fmt in (rpb.MODEL_FORMAT_SAFETENSORS, rpb.MODEL_FORMAT_ONNX):
            version = await stub.CreateVersion(version_request("m", fmt=fmt))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                # Named like safetensors on the client side too: names play no part.
                await stub.UploadArtifact(aiter_of(upload_messages("m", version.version, payload)))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (label, info.value.details())
            assert_clean(info.value.details(), str(artifact_root))
            still = await stub.GetVersion(rpb.GetVersionRequest(model="m", version=version.version))
            assert still.status == rpb.VERSION_STATUS_FAILED and still.status_reason
    assert not canary.exists()
    assert not any((artifact_root / "blobs").rglob("*.*")) and not any(
        p.is_file() for p in (artifact_root / "blobs").rglob("*")
    )
    assert not any(p.is_file() for p in (artifact_root / "tmp").rglob("*"))


async def test_malformed_safetensors_are_refused(stub, artifact_root: Path) -> None:
    await stub.CreateModel(rpb.CreateModelRequest(name="m"))
    for label, payload in malformed_safetensors().items():
        version = await stub.CreateVersion(version_request("m"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UploadArtifact(aiter_of(upload_messages("m", version.version, payload)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, label
    assert not any(p.is_file() for p in (artifact_root / "blobs").rglob("*"))


async def test_every_stored_path_stays_under_the_artifact_root(stub, artifact_root: Path) -> None:
    await stub.CreateModel(rpb.CreateModelRequest(name="m"))
    for seed in range(5):
        version = await stub.CreateVersion(version_request("m"))
        await stub.UploadArtifact(aiter_of(upload_messages("m", version.version, safetensors_bytes(seed))))
    root = artifact_root.resolve()
    for path in artifact_root.rglob("*"):
        assert path.resolve().is_relative_to(root)
        assert not path.is_symlink()


async def test_smuggled_training_specs_are_refused(sqlite_registry, tmp_path: Path) -> None:
    from maas.common.server import start_server
    from maas.trainer.app import TrainerApp
    from maas.v1 import trainer_pb2_grpc
    from tests.trainer.conftest import trainer_settings

    settings = trainer_settings(tmp_path / "t", sqlite_registry.address, warm_workers=0)
    trainer = await start_server(settings, TrainerApp(settings))
    canary = tmp_path / "canary"
    attempts: list[tpb.JobSpec] = []
    for name in [f"__import__('os').system('touch {canary}')", "subprocess.Popen", "builtins.eval", "os:system"]:
        attempts.append(tpb.JobSpec(model=tpb.ModelSpec(name=name), dataset=tpb.DatasetSpec(name="digits")))
        attempts.append(tpb.JobSpec(model=tpb.ModelSpec(name="mlp"), dataset=tpb.DatasetSpec(name=name)))
    for path in [*HOSTILE[:9], str(tmp_path), "/etc", "$(touch x)", "`id`"]:
        attempts.append(
            tpb.JobSpec(model=tpb.ModelSpec(name="mlp"), dataset=tpb.DatasetSpec(name="imagefolder", path=path))
        )
    smuggled = digits_spec()
    smuggled.model.args.update({"__reduce__": "os.system", "activation": "eval"})
    attempts.append(smuggled)
    nested = digits_spec()
    nested.dataset.args.update({"root": "/etc"})
    attempts.append(nested)
    try:
        async with grpc.aio.insecure_channel(trainer.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            for spec in attempts:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, spec
                assert_clean(info.value.details(), str(tmp_path))
            assert list((await stub.ListJobs(tpb.ListJobsRequest())).jobs) == []
    finally:
        await trainer.stop(0)
    assert not canary.exists()


def nested(depth: int) -> dict[str, object]:
    """A JSON object `depth` objects deep: past protobuf's recursion limit (100 messages, about 33 levels)."""
    doc: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


async def test_a_request_that_does_not_parse_is_invalid_argument(registry, stub, caplog) -> None:
    await stub.CreateModel(rpb.CreateModelRequest(name="deep"))
    request = version_request("deep")
    request.architecture.Clear()
    request.architecture.update(nested(40))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(request)
    # A client stream with one message that is not protobuf (a length running past the end).
    header = rpb.UploadArtifactRequest(header=rpb.ArtifactHeader(model="deep", version=1, size_bytes=4))
    async with grpc.aio.insecure_channel(registry.address) as channel:
        upload = channel.stream_unary("/maas.v1.RegistryService/UploadArtifact")
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await upload(aiter_of(iter([header.SerializeToString(), b"\x12\xff\x01"])), timeout=10)
    # The service answers the next call, and gRPC logged no "Unexpected DecodeError" traceback.
    version = await stub.CreateVersion(version_request("deep"))
    assert version.version == 1
    assert "DecodeError" not in caplog.text


async def test_a_job_spec_nested_past_the_parse_limit_is_invalid_argument(sqlite_registry, tmp_path: Path) -> None:
    from maas.common.server import start_server
    from maas.trainer.app import TrainerApp
    from maas.v1 import trainer_pb2_grpc
    from tests.trainer.conftest import trainer_settings

    settings = trainer_settings(tmp_path / "t", sqlite_registry.address, warm_workers=0)
    trainer = await start_server(settings, TrainerApp(settings))
    # Built in place: copying a message this deep into another one would have to parse it.
    deep_model = tpb.SubmitJobRequest(spec=digits_spec())
    deep_model.spec.model.args.update({"hidden": nested(40)})
    deep_data = tpb.SubmitJobRequest(spec=digits_spec())
    deep_data.spec.dataset.args.update({"split": nested(40)})
    try:
        async with grpc.aio.insecure_channel(trainer.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            for request in (deep_model, deep_data):
                async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
                    await stub.SubmitJob(request)
            assert list((await stub.ListJobs(tpb.ListJobsRequest())).jobs) == []
    finally:
        await trainer.stop(0)


async def test_errors_leak_no_dsn_or_password(tmp_path: Path, held_port: int) -> None:
    from maas.common.server import start_server
    from maas.registry.app import RegistryApp
    from maas.v1 import registry_pb2_grpc
    from tests.conftest import registry_settings

    dsn = f"postgresql://maas:hunter2-secret@127.0.0.1:{held_port}/registry"  # nothing listens there
    settings = registry_settings(dsn, tmp_path / "artifacts", auto_migrate=True, db_connect_timeout=1.0)
    running = await start_server(settings, RegistryApp(settings))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            for call in (
                stub.GetModel(rpb.GetModelRequest(name="m")),
                stub.CreateModel(rpb.CreateModelRequest(name="m")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert_clean(info.value.details(), "hunter2", "maas:", str(tmp_path), "postgresql://")
    finally:
        await running.stop(0)
