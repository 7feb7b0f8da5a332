"""Edge formats (ORT, ExecuTorch .pte): recognized by content, only ever additional artifacts of a version."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from maas.registry.storage import formats
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, safetensors_bytes
from tests.registry.test_artifacts import pending, upload
from tests.registry.test_version_artifacts import ORT_BYTES, download_format, formats_of

# The first bytes of a program executorch 1.5 writes: the root table offset, "ET12", its extended header "eh00".
PTE_BYTES = b"<\x00\x00\x00ET12eh00" + bytes(52)


@pytest.mark.parametrize(
    ("data", "kind"), [(PTE_BYTES, "pte"), (ORT_BYTES, "ort"), (b"<\x00\x00\x00ET11" + bytes(56), "unknown")]
)
def test_sniffed_by_file_identifier(tmp_path: Path, data: bytes, kind: str) -> None:
    path = tmp_path / "model.bin"  # the name says nothing
    path.write_bytes(data)
    assert formats.sniff(path).kind == kind


async def test_pte_added_to_a_ready_version_and_downloaded(stub, artifact_root) -> None:
    v = await pending(stub)
    await upload(stub, "m", v.version, safetensors_bytes(2))
    added = await upload(stub, "m", v.version, PTE_BYTES, fmt=pb.MODEL_FORMAT_PTE)
    assert added.status == pb.VERSION_STATUS_READY
    assert formats_of(added) == [pb.MODEL_FORMAT_SAFETENSORS, pb.MODEL_FORMAT_PTE]
    info, data = await download_format(stub, "m", v.version, pb.MODEL_FORMAT_PTE)
    assert info.format == pb.MODEL_FORMAT_PTE and data == PTE_BYTES
    async with raises_code(grpc.StatusCode.ALREADY_EXISTS):
        await upload(stub, "m", v.version, PTE_BYTES + b"x", fmt=pb.MODEL_FORMAT_PTE)


async def test_content_must_be_the_declared_edge_format(stub, artifact_root) -> None:
    v = await pending(stub)
    await upload(stub, "m", v.version, safetensors_bytes(2))
    for data, fmt in (
        (ORT_BYTES, pb.MODEL_FORMAT_PTE),
        (PTE_BYTES, pb.MODEL_FORMAT_ORT),
        (PTE_BYTES, pb.MODEL_FORMAT_ONNX),
    ):
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await upload(stub, "m", v.version, data, fmt=fmt)
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version))
    assert formats_of(got) == [pb.MODEL_FORMAT_SAFETENSORS]


@pytest.mark.parametrize("fmt", [pb.MODEL_FORMAT_PTE, pb.MODEL_FORMAT_ORT])
async def test_an_edge_format_is_never_a_version_primary(stub, artifact_root, fmt: int) -> None:
    """Nothing here serves one: a version whose only artifact it would be never becomes READY."""
    await stub.CreateModel(pb.CreateModelRequest(name="edge"))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await pending(stub, "edge", fmt=fmt)
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="edge"))
    assert list(listed.versions) == []
