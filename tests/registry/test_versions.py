"""Versions: race-free numbering, reads, lists, edits, archive and delete."""

from __future__ import annotations

import asyncio

import grpc

from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, ready_version, version_request


async def test_create_records_everything(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    req = version_request("m", description="first", tags={"data": "digits"}, metrics={"val_accuracy": 0.9})
    v = await stub.CreateVersion(req)
    assert v.version == 1
    assert v.status == pb.VERSION_STATUS_PENDING
    assert v.format == pb.MODEL_FORMAT_SAFETENSORS
    assert v.architecture["name"] == "mlp"
    # Integral numbers come back as integers, not 10.0.
    assert v.signature.inputs[0].shape == [-1, 4]
    assert v.signature.inputs[0].datatype == common_pb2.DATA_TYPE_FP32
    assert v.tags == {"data": "digits"} and v.metrics == {"val_accuracy": 0.9}
    assert v.created_at.seconds > 0
    fetched = await stub.GetVersion(pb.GetVersionRequest(model="m", version=1))
    assert fetched.signature == v.signature
    assert fetched.architecture == v.architecture
    assert (await stub.GetModel(pb.GetModelRequest(name="m"))).latest_version == 1


async def test_fifty_concurrent_creates_get_one_to_fifty(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="busy"))
    results = await asyncio.gather(*(stub.CreateVersion(version_request("busy")) for _ in range(50)))
    assert sorted(v.version for v in results) == list(range(1, 51))
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="busy", page=common_pb2.PageRequest(page_size=100)))
    assert [v.version for v in listed.versions] == list(range(50, 0, -1))


async def test_create_validation(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.CreateVersion(version_request("absent"))
    no_arch = pb.CreateVersionRequest(model="m", format=pb.MODEL_FORMAT_SAFETENSORS)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(no_arch)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(pb.CreateVersionRequest(model="m"))  # no format
    bad_shape = version_request("m")
    bad_shape.signature.inputs[0].shape[:] = [-2, 4]
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(bad_shape)
    no_dtype = version_request("m")
    no_dtype.signature.inputs[0].datatype = common_pb2.DATA_TYPE_UNSPECIFIED
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(no_dtype)
    code_format = pb.CreateVersionRequest(model="m", format=pb.MODEL_FORMAT_TORCHSCRIPT)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(code_format)
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.CreateVersion(version_request("m", run_id="0" * 32))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(version_request("m", run_id="../../etc"))
    # None of the refused requests used up a number.
    assert (await stub.CreateVersion(version_request("m"))).version == 1


async def test_get_unknown_and_bad_numbers(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetVersion(pb.GetVersionRequest(model="m", version=7))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.GetVersion(pb.GetVersionRequest(model="m", version=-1))


async def test_list_filters_by_status_and_tag(stub) -> None:
    ready = await ready_version(stub, "m", tags={"kind": "good"})
    pending = await stub.CreateVersion(version_request("m", tags={"kind": "bad"}))
    failed = await stub.CreateVersion(version_request("m"))
    await stub.FailVersion(pb.FailVersionRequest(model="m", version=failed.version, reason="export broke"))

    async def numbers(**kwargs) -> list[int]:
        resp = await stub.ListVersions(pb.ListVersionsRequest(model="m", **kwargs))
        return [v.version for v in resp.versions]

    assert await numbers(statuses=[pb.VERSION_STATUS_READY]) == [ready.version]
    assert await numbers(statuses=[pb.VERSION_STATUS_PENDING, pb.VERSION_STATUS_FAILED]) == [
        failed.version,
        pending.version,
    ]
    assert await numbers(tags=[common_pb2.TagFilter(key="kind", value="bad")]) == [pending.version]
    assert await numbers(order=pb.VERSION_ORDER_OLDEST) == [1, 2, 3]
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=failed.version))
    assert got.status == pb.VERSION_STATUS_FAILED and got.status_reason == "export broke"


async def test_order_by_metric_pages_best_first(stub) -> None:
    scores = [0.5, 0.9, 0.7, 0.9, 0.1, 0.8, 0.3]
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for score in scores:
        await stub.CreateVersion(version_request("m", metrics={"val_accuracy": score}))
    await stub.CreateVersion(version_request("m"))  # no metric: listed last
    seen: list[int] = []
    token = ""
    while True:
        resp = await stub.ListVersions(
            pb.ListVersionsRequest(
                model="m",
                order=pb.VERSION_ORDER_METRIC_DESC,
                order_metric="val_accuracy",
                page=common_pb2.PageRequest(page_size=3, page_token=token),
            )
        )
        seen.extend(v.version for v in resp.versions)
        token = resp.next_page_token
        if not token:
            break
    # Ties on the metric: newest first.
    assert seen == [4, 2, 6, 3, 1, 7, 5, 8]
    asc = await stub.ListVersions(
        pb.ListVersionsRequest(model="m", order=pb.VERSION_ORDER_METRIC_ASC, order_metric="val_accuracy")
    )
    assert [v.version for v in asc.versions] == [5, 7, 1, 3, 6, 4, 2, 8]


async def test_pagination_is_stable_under_concurrent_inserts(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for _ in range(30):
        await stub.CreateVersion(version_request("m"))
    seen: list[int] = []
    token = ""
    inserting = asyncio.gather(*(stub.CreateVersion(version_request("m")) for _ in range(30)))
    for direction in (pb.VERSION_ORDER_NEWEST,):
        while True:
            resp = await stub.ListVersions(
                pb.ListVersionsRequest(
                    model="m", order=direction, page=common_pb2.PageRequest(page_size=4, page_token=token)
                )
            )
            seen.extend(v.version for v in resp.versions)
            token = resp.next_page_token
            await asyncio.sleep(0)
            if not token:
                break
    await inserting
    # No duplicates, no gaps below where the listing started.
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen, reverse=True)
    assert seen == list(range(seen[0], 0, -1))
    assert seen[0] >= 30


async def test_update_archive_and_delete(stub, artifact_root) -> None:
    v1 = await ready_version(stub, "m")
    v2 = await ready_version(stub, "m")
    updated = await stub.UpdateVersion(
        pb.UpdateVersionRequest(model="m", version=v1.version, description="d", set_tags={"a": "1"})
    )
    assert updated.description == "d" and updated.tags == {"a": "1"}

    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v2.version))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.ArchiveVersion(pb.ArchiveVersionRequest(model="m", version=v2.version, archived=True))
    archived = await stub.ArchiveVersion(pb.ArchiveVersionRequest(model="m", version=v1.version, archived=True))
    assert archived.archived
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m"))
    assert [v.version for v in listed.versions] == [v2.version]
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m", include_archived=True))
    assert [v.version for v in listed.versions] == [v2.version, v1.version]

    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=v2.version))
    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=v1.version))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetVersion(pb.GetVersionRequest(model="m", version=v1.version))
    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=v2.version, force=True))
    model = await stub.GetModel(pb.GetModelRequest(name="m"))
    assert dict(model.aliases) == {}
    assert not any(artifact_root.glob("blobs/sha256/*/*"))
    # Numbers are never reused after a delete.
    assert (await stub.CreateVersion(version_request("m"))).version == 3


async def test_fail_only_pending(stub) -> None:
    ready = await ready_version(stub, "m")
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.FailVersion(pb.FailVersionRequest(model="m", version=ready.version, reason="x"))


async def test_resolve_references(stub) -> None:
    v1 = await ready_version(stub, "m")
    v2 = await ready_version(stub, "m")
    await stub.CreateVersion(version_request("m"))  # PENDING 3 is not "latest"
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="staging", version=v1.version))
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@staging"))).version == v1.version
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m/2"))).version == v2.version
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m"))).version == v2.version
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@latest"))).version == v2.version
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@production"))
    for bad in ["m/../1", "m@", "m/x", "m@Prod", "../m", "m/1/2", "file:///m"]:
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.ResolveVersion(pb.ResolveVersionRequest(ref=bad))


async def test_architecture_numbers_must_be_finite(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for bad in (float("nan"), float("inf"), float("-inf")):
        req = version_request("m")
        req.architecture.update({"args": {"dropout": bad}})
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.CreateVersion(req)
    assert (await stub.CreateVersion(version_request("m"))).version == 1
