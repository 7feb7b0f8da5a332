"""A version with several artifacts (the primary one and other formats): upload rules, reads, downloads, deletes."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, safetensors_bytes
from tests.registry.test_artifacts import blobs, download, parts, pending, upload


def mlp_onnx(seed: int = 0) -> bytes:
    """An ONNX graph of the helpers' MLP (input [-1, 4] -> logits [-1, 3]), built without torch."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((4, 8)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["o"]),
            helper.make_node("Add", ["o", "b2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


ORT_BYTES = b"\x10\x00\x00\x00ORTM" + bytes(56)  # a flatbuffer header with ORT's file identifier


async def download_format(stub, model: str, version: int, fmt: int) -> tuple[pb.ArtifactInfo, bytes]:
    info: pb.ArtifactInfo | None = None
    data = bytearray()
    request = pb.DownloadArtifactRequest(model=model, version=version, format=fmt)  # type: ignore[arg-type]
    async for message in stub.DownloadArtifact(request):
        if message.WhichOneof("part") == "info":
            info = message.info
        else:
            data += message.chunk
    assert info is not None
    return info, bytes(data)


def formats_of(v: pb.ModelVersion) -> list[int]:
    return [a.format for a in v.artifacts]


async def test_onnx_beside_safetensors_while_pending_then_primary(stub, artifact_root) -> None:
    weights, graph = safetensors_bytes(1), mlp_onnx(1)
    v = await pending(stub)
    added = await upload(stub, "m", v.version, graph, fmt=pb.MODEL_FORMAT_ONNX)
    # The extra artifact does not make the version READY; the primary one does.
    assert added.status == pb.VERSION_STATUS_PENDING and added.sha256 == ""
    assert formats_of(added) == [pb.MODEL_FORMAT_ONNX]
    ready = await upload(stub, "m", v.version, weights)
    assert ready.status == pb.VERSION_STATUS_READY
    assert formats_of(ready) == [pb.MODEL_FORMAT_SAFETENSORS, pb.MODEL_FORMAT_ONNX]  # primary first
    primary, extra = ready.artifacts
    assert (primary.sha256, primary.size_bytes) == (ready.sha256, ready.size_bytes)
    assert (extra.sha256, extra.size_bytes) == (hashlib.sha256(graph).hexdigest(), len(graph))
    assert extra.created_at.seconds > 0

    # Every read shows them: one version, resolve, and lists.
    for got in (
        await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version)),
        await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m")),
        (await stub.ListVersions(pb.ListVersionsRequest(model="m"))).versions[0],
    ):
        assert list(got.artifacts) == list(ready.artifacts)

    # Downloads choose one; UNSPECIFIED is the primary.
    info, data = await download_format(stub, "m", v.version, pb.MODEL_FORMAT_ONNX)
    assert (info.format, data) == (pb.MODEL_FORMAT_ONNX, graph)
    assert (await download(stub, "m", v.version))[1] == weights
    info, data = await download_format(stub, "m", v.version, pb.MODEL_FORMAT_SAFETENSORS)
    assert (info.format, data) == (pb.MODEL_FORMAT_SAFETENSORS, weights)
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await download_format(stub, "m", v.version, pb.MODEL_FORMAT_ORT)

    # Adding one is an event, between the creation and READY.
    seen: list[int] = []
    async for event in stub.WatchEvents(pb.WatchEventsRequest(models=["m"])):
        seen.append(event.type)
        if event.type == pb.EVENT_TYPE_VERSION_READY:
            break
    assert seen[-3:] == [pb.EVENT_TYPE_VERSION_CREATED, pb.EVENT_TYPE_ARTIFACT_ADDED, pb.EVENT_TYPE_VERSION_READY]


async def test_artifacts_added_to_a_ready_version_once_per_format(stub, artifact_root) -> None:
    v = await pending(stub)
    await upload(stub, "m", v.version, safetensors_bytes(2))
    added = await upload(stub, "m", v.version, mlp_onnx(2), fmt=pb.MODEL_FORMAT_ONNX)
    assert added.status == pb.VERSION_STATUS_READY
    ort = await upload(stub, "m", v.version, ORT_BYTES, fmt=pb.MODEL_FORMAT_ORT)
    assert formats_of(ort) == [pb.MODEL_FORMAT_SAFETENSORS, pb.MODEL_FORMAT_ONNX, pb.MODEL_FORMAT_ORT]
    stored = len(blobs(artifact_root))
    for fmt, data in ((pb.MODEL_FORMAT_ONNX, mlp_onnx(3)), (pb.MODEL_FORMAT_ORT, ORT_BYTES + b"x")):
        async with raises_code(grpc.StatusCode.ALREADY_EXISTS):
            await upload(stub, "m", v.version, data, fmt=fmt)
    assert len(blobs(artifact_root)) == stored and parts(artifact_root) == []


async def test_refused_extra_artifact_leaves_the_version_as_it_was(stub, artifact_root) -> None:
    v = await pending(stub)
    ready = await upload(stub, "m", v.version, safetensors_bytes(4))
    # Content sniffing: safetensors bytes declared ONNX, and a format that carries code.
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, safetensors_bytes(5), fmt=pb.MODEL_FORMAT_ONNX)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, b"\x80\x04K\x01.", fmt=pb.MODEL_FORMAT_PICKLE)
    # An ONNX graph that contradicts the version's signature.
    wrong = onnx.load_from_string(mlp_onnx(6))
    wrong.graph.input[0].name = "x"
    wrong.graph.node[0].input[0] = "x"
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", v.version, wrong.SerializeToString(), fmt=pb.MODEL_FORMAT_ONNX)
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version))
    assert got.status == pb.VERSION_STATUS_READY and got.status_reason == ""
    assert list(got.artifacts) == list(ready.artifacts)
    assert len(blobs(artifact_root)) == 1 and parts(artifact_root) == []


async def test_failed_version_takes_no_artifact(stub, artifact_root) -> None:
    v = await pending(stub)
    await stub.FailVersion(pb.FailVersionRequest(model="m", version=v.version, reason="export broke"))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await upload(stub, "m", v.version, mlp_onnx(), fmt=pb.MODEL_FORMAT_ONNX)
    assert blobs(artifact_root) == [] and parts(artifact_root) == []


async def test_concurrent_extra_uploads_of_one_format_store_one(stub, artifact_root) -> None:
    v = await pending(stub)
    await upload(stub, "m", v.version, safetensors_bytes(7))
    results = await asyncio.gather(
        *(upload(stub, "m", v.version, mlp_onnx(seed), fmt=pb.MODEL_FORMAT_ONNX) for seed in range(4)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.ModelVersion)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and {e.code() for e in lost} == {grpc.StatusCode.ALREADY_EXISTS}
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version))
    assert formats_of(got) == [pb.MODEL_FORMAT_SAFETENSORS, pb.MODEL_FORMAT_ONNX]
    # Only the winner's bytes remain stored.
    assert {p.name for p in blobs(artifact_root)} == {a.sha256 for a in got.artifacts}


async def test_shared_blobs_are_removed_only_when_no_artifact_holds_them(stub, artifact_root: Path) -> None:
    graph = mlp_onnx(8)
    a = await pending(stub)
    await upload(stub, "m", a.version, graph, fmt=pb.MODEL_FORMAT_ONNX)
    await upload(stub, "m", a.version, safetensors_bytes(8))
    b = await pending(stub, model="other")
    await upload(stub, "other", b.version, graph, fmt=pb.MODEL_FORMAT_ONNX)  # the same bytes: one blob
    await upload(stub, "other", b.version, safetensors_bytes(9))
    onnx_sha = hashlib.sha256(graph).hexdigest()
    assert len(blobs(artifact_root)) == 3

    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=a.version))
    assert onnx_sha in {p.name for p in blobs(artifact_root)} and len(blobs(artifact_root)) == 2
    assert (await download_format(stub, "other", b.version, pb.MODEL_FORMAT_ONNX))[1] == graph

    await stub.DeleteModel(pb.DeleteModelRequest(name="other", force=True))
    assert blobs(artifact_root) == []
