"""The format policy through gRPC: refused by content, never by name; trusted formats opt-in."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from maas.v1 import registry_pb2 as pb
from maas.v1 import registry_pb2_grpc
from tests.helpers import aiter_of, mlp_arch, raises_code, raw_safetensors, upload_messages, version_request
from tests.registry.conftest import CODE_KINDS, serving
from tests.registry.test_artifacts import assert_refused, blobs, download


async def upload(stub, model: str, version: int, data: bytes) -> pb.ModelVersion:
    return await stub.UploadArtifact(aiter_of(upload_messages(model, version, data, chunk=4096)))


async def new_version(stub, fmt: int) -> int:
    return (await stub.CreateVersion(version_request("m", fmt=fmt))).version


@pytest.fixture
async def trusted_stub(db_url, tmp_path) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:
    async with serving(db_url, tmp_path / "trusted", trusted_formats=True) as (_, stub):
        yield stub


async def test_code_formats_are_refused_whatever_is_declared(stub, artifact_root, torch_artifacts) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for kind in CODE_KINDS:
        for declared in (pb.MODEL_FORMAT_SAFETENSORS, pb.MODEL_FORMAT_ONNX):
            number = await new_version(stub, declared)
            try:
                async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
                    await upload(stub, "m", number, torch_artifacts[kind])
            except AssertionError as exc:
                raise AssertionError(f"{kind} declared as {pb.ModelFormat.Name(declared)}: {exc}") from None
            await assert_refused(stub, artifact_root, "m", number)
    # Versions of the code formats themselves cannot even be created.
    for fmt in (pb.MODEL_FORMAT_TORCHSCRIPT, pb.MODEL_FORMAT_TORCH_EXPORT, pb.MODEL_FORMAT_PICKLE):
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.CreateVersion(version_request("m", fmt=fmt))


async def test_onnx_export_is_accepted(stub, artifact_root, torch_artifacts) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    data = torch_artifacts["onnx"]
    number = await new_version(stub, pb.MODEL_FORMAT_ONNX)
    ready = await upload(stub, "m", number, data)
    assert ready.status == pb.VERSION_STATUS_READY and ready.format == pb.MODEL_FORMAT_ONNX
    info, downloaded, _ = await download(stub, "m", number)
    assert info.format == pb.MODEL_FORMAT_ONNX and downloaded == data
    # ONNX bytes are not safetensors.
    other = await new_version(stub, pb.MODEL_FORMAT_SAFETENSORS)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "m", other, data)


async def test_trusted_formats_accept_torchscript(trusted_stub, torch_artifacts) -> None:
    stub = trusted_stub
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    script = torch_artifacts["torchscript"]
    number = await new_version(stub, pb.MODEL_FORMAT_TORCHSCRIPT)
    ready = await upload(stub, "m", number, script)
    assert ready.status == pb.VERSION_STATUS_READY and ready.sha256 == hashlib.sha256(script).hexdigest()
    exported = await new_version(stub, pb.MODEL_FORMAT_TORCH_EXPORT)
    assert (await upload(stub, "m", exported, torch_artifacts["torch-export"])).status == pb.VERSION_STATUS_READY

    # Trust covers the declared format only: content still has to match it.
    for fmt, kind in (
        (pb.MODEL_FORMAT_TORCHSCRIPT, "pickle"),
        (pb.MODEL_FORMAT_TORCHSCRIPT, "torch-export"),
        (pb.MODEL_FORMAT_SAFETENSORS, "torchscript"),
        (pb.MODEL_FORMAT_SAFETENSORS, "pickle"),
        (pb.MODEL_FORMAT_ONNX, "gzip-pickle"),
    ):
        number = await new_version(stub, fmt)
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await upload(stub, "m", number, torch_artifacts[kind])


def st_header(tensors: dict[str, object]) -> bytes:
    return json.dumps(tensors).encode()


MALFORMED = {
    "header length past the file": raw_safetensors(
        st_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}), b"\x00" * 4, header_len=1 << 20
    ),
    "overlapping offsets": raw_safetensors(
        st_header(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            }
        ),
        b"\x00" * 12,
    ),
    "shape does not match offsets": raw_safetensors(
        st_header({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}), b"\x00" * 8
    ),
    "huge shape": raw_safetensors(
        st_header({"a": {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}), b"\x00" * 8
    ),
}


async def test_malformed_safetensors_are_refused(stub, artifact_root) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for case, data in MALFORMED.items():
        number = await new_version(stub, pb.MODEL_FORMAT_SAFETENSORS)
        try:
            async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
                await upload(stub, "m", number, data)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from None
        await assert_refused(stub, artifact_root, "m", number)


async def test_safetensors_with_a_640_byte_header_is_accepted(stub, artifact_root) -> None:
    # The tensors of mlp_arch(hidden=1, in_features=1): 1 + 1 + 3 + 3 floats.
    shapes = {"layers.1.weight": [1, 1], "layers.1.bias": [1], "layers.3.weight": [3, 1], "layers.3.bias": [3]}
    tensors, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        tensors[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header = st_header(tensors)
    data = raw_safetensors(header + b" " * (640 - len(header)), b"\x00" * offset)
    assert data[:2] == b"\x80\x02"  # what a pickle's first opcode looks like
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    request = version_request("m", architecture=mlp_arch(hidden=1, in_features=1))
    number = (await stub.CreateVersion(request)).version
    assert (await upload(stub, "m", number, data)).status == pb.VERSION_STATUS_READY
    assert len(blobs(artifact_root)) == 1
