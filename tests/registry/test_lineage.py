"""Lineage: stored as given at CreateVersion, returned by every read, bounded, its parent required to exist."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import json_format

from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, ready_version, version_request


def trained_lineage(**overrides: object) -> pb.Lineage:
    lineage = pb.Lineage(
        source="trainer",
        job_id="job-1",
        dataset=pb.DatasetLineage(
            name="fake",
            path="",
            fingerprint="fake:channels=3,image_size=8,num_classes=4,num_samples=100,seed=7",
            validation_split=0.2,
            seed=7,
        ),
        software={"maas": "0.1.0", "python": "3.12.1", "torch": "2.5.0"},
    )
    lineage.dataset.args.update({"num_samples": 100, "num_classes": 4, "image_size": 8, "channels": 3})
    for key, value in overrides.items():
        setattr(lineage, key, value)
    return lineage


async def test_every_read_returns_the_lineage_given(stub) -> None:
    parent = await ready_version(stub, "m")
    lineage = trained_lineage()
    lineage.parent.CopyFrom(pb.VersionRef(model="m", version=parent.version))
    lineage.method = "quantize-int8-dynamic"
    lineage.pretrained.CopyFrom(
        pb.PretrainedLineage(path="weights/resnet18-f37072fd.pth", sha256="f37072fd" + "0" * 56)
    )
    created = await stub.CreateVersion(version_request("m", lineage=lineage))
    assert created.lineage == lineage
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=created.version))
    assert got.lineage == lineage
    # The data set's arguments come back as the numbers they were (num_samples: 100, not 100.0).
    assert json_format.MessageToDict(got.lineage.dataset.args) == {
        "num_samples": 100,
        "num_classes": 4,
        "image_size": 8,
        "channels": 3,
    }
    resolved = await stub.ResolveVersion(pb.ResolveVersionRequest(ref=f"m/{created.version}"))
    assert resolved.lineage == lineage
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="prod", version=parent.version))
    by_alias = await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@prod"))
    assert not by_alias.HasField("lineage")  # the parent was registered without one
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m"))
    assert [(v.version, v.lineage) for v in listed.versions] == [
        (created.version, lineage),
        (parent.version, pb.Lineage()),
    ]
    assert not listed.versions[1].HasField("lineage")


async def test_lists_by_metric_carry_each_versions_own_lineage(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for i in range(3):
        await stub.CreateVersion(
            version_request("m", metrics={"val_accuracy": i / 10}, lineage=trained_lineage(job_id=f"job-{i}"))
        )
    listed = await stub.ListVersions(
        pb.ListVersionsRequest(
            model="m",
            order=pb.VERSION_ORDER_METRIC_DESC,
            order_metric="val_accuracy",
            page=common_pb2.PageRequest(page_size=2),
        )
    )
    assert [(v.version, v.lineage.job_id) for v in listed.versions] == [(3, "job-2"), (2, "job-1")]
    rest = await stub.ListVersions(
        pb.ListVersionsRequest(
            model="m",
            order=pb.VERSION_ORDER_METRIC_DESC,
            order_metric="val_accuracy",
            page=common_pb2.PageRequest(page_size=2, page_token=listed.next_page_token),
        )
    )
    assert [(v.version, v.lineage.job_id) for v in rest.versions] == [(1, "job-0")]


async def test_lineage_survives_the_upload_that_makes_a_version_ready(stub) -> None:
    ready = await ready_version(stub, "m", lineage=pb.Lineage(source="push", software={"maas": "0.1.0"}))
    assert ready.status == pb.VERSION_STATUS_READY
    assert (ready.lineage.source, dict(ready.lineage.software)) == ("push", {"maas": "0.1.0"})


async def test_a_parent_that_does_not_exist_is_not_found(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    for ref in (pb.VersionRef(model="m", version=5), pb.VersionRef(model="absent", version=1)):
        async with raises_code(grpc.StatusCode.NOT_FOUND):
            await stub.CreateVersion(version_request("m", lineage=pb.Lineage(source="optimize", parent=ref)))
    # Nothing was created and no number used up.
    assert (await stub.CreateVersion(version_request("m"))).version == 1


def _refused_lineages() -> list[tuple[str, pb.Lineage]]:
    cases: list[tuple[str, pb.Lineage]] = [
        ("unknown source", pb.Lineage(source="scp")),
        ("job id with a path", pb.Lineage(source="trainer", job_id="../etc")),
        ("parent without a number", pb.Lineage(parent=pb.VersionRef(model="m"))),
        ("parent with a bad name", pb.Lineage(parent=pb.VersionRef(model="a/b", version=1))),
        ("data set without a name", pb.Lineage(dataset=pb.DatasetLineage(fingerprint="sha256:00"))),
        ("split of one", pb.Lineage(dataset=pb.DatasetLineage(name="digits", validation_split=1.0))),
        ("split NaN", pb.Lineage(dataset=pb.DatasetLineage(name="digits", validation_split=math.nan))),
        ("huge fingerprint", pb.Lineage(dataset=pb.DatasetLineage(name="digits", fingerprint="f" * 10_000))),
        ("huge method", pb.Lineage(method="m" * 10_000)),
        ("bad software key", pb.Lineage(software={"no spaces": "1"})),
        ("many software entries", pb.Lineage(software={f"lib{i}": "1.0" for i in range(100)})),
        ("NUL in a software version", pb.Lineage(software={"torch": "2\x00"})),
        (
            "pretrained sha256 not hex",
            pb.Lineage(pretrained=pb.PretrainedLineage(path="w.safetensors", sha256="x" * 64)),
        ),
        ("pretrained sha256 without a path", pb.Lineage(pretrained=pb.PretrainedLineage(sha256="0" * 64))),
    ]
    infinite = pb.Lineage(dataset=pb.DatasetLineage(name="fake"))
    infinite.dataset.args.update({"num_samples": math.inf})
    cases.append(("infinite argument", infinite))
    huge = pb.Lineage(dataset=pb.DatasetLineage(name="fake"))
    huge.dataset.args.update({f"k{i}": "v" * 100 for i in range(1000)})
    cases.append(("huge arguments", huge))
    return cases


@pytest.mark.parametrize(("case", "lineage"), _refused_lineages(), ids=[c for c, _ in _refused_lineages()])
async def test_refused_lineage_is_invalid_argument(stub, case: str, lineage: pb.Lineage) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(version_request("m", lineage=lineage))
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m"))
    assert list(listed.versions) == []


async def test_an_empty_lineage_is_none(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    created = await stub.CreateVersion(version_request("m", lineage=pb.Lineage()))
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=created.version))
    assert not got.HasField("lineage")
