"""The registry records where a version's catalog entries came from, and refuses architectures it lacks."""

from __future__ import annotations

import grpc
import pytest

from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, version_request


def lineage(architecture_origin: str, dataset_origin: str) -> pb.Lineage:
    return pb.Lineage(
        source="trainer",
        job_id="job-1",
        architecture_origin=architecture_origin,
        dataset=pb.DatasetLineage(name="waveforms", fingerprint="x", validation_split=0.1, origin=dataset_origin),
    )


async def test_the_origins_of_a_version_are_stored_and_read_back(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    given = lineage("maas-example-plugin 0.1.0", "built-in")
    given.dataset.args.update({"length": 64})
    created = await stub.CreateVersion(version_request("m", lineage=given))
    assert created.lineage.architecture_origin == "maas-example-plugin 0.1.0"
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=created.version))
    assert (got.lineage.architecture_origin, got.lineage.dataset.origin) == ("maas-example-plugin 0.1.0", "built-in")
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m"))
    assert listed.versions[0].lineage == given


async def test_an_oversized_origin_is_invalid_argument(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for bad in (lineage("x" * 300, ""), lineage("", "y" * 300)):
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.CreateVersion(version_request("m", lineage=bad))


async def test_an_architecture_not_installed_beside_the_registry_is_refused_saying_so(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    doc = {"name": "conv9d", "args": {"num_classes": 3}, "input_shape": [4]}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateVersion(version_request("m", architecture=doc))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "unknown architecture 'conv9d'" in details and "registry" in details and "mlp" in details
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m"))
    assert list(listed.versions) == []
