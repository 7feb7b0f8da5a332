"""Deployments through the real registry service, on SQLite and PostgreSQL: records, rules, generations,
events and replica reports."""

from __future__ import annotations

import asyncio

import grpc

from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, ready_version, version_request
from tests.registry.test_events import take, take_until, watch

DEPLOYMENT_EVENTS = [
    pb.EVENT_TYPE_DEPLOYMENT_CREATED,
    pb.EVENT_TYPE_DEPLOYMENT_UPDATED,
    pb.EVENT_TYPE_DEPLOYMENT_DELETED,
]


def spec(*targets: tuple[str, int], shadow: str = "", sample: int = 0, **options: object) -> pb.DeploymentSpec:
    out = pb.DeploymentSpec(
        targets=[pb.DeploymentTarget(ref=ref, weight=weight) for ref, weight in targets],
        options=pb.ServingOptions(**options),  # type: ignore[arg-type]
    )
    if shadow:
        out.shadow.CopyFrom(pb.ShadowTarget(ref=shadow, sample_percent=sample))
    return out


def served(d: pb.Deployment) -> list[tuple[str, int]]:
    return [(t.ref, t.weight) for t in d.spec.targets]


async def digits(stub, versions: int = 3) -> None:
    """Model 'digits' with READY versions 1..n, production -> 1 and staging -> the last."""
    for _ in range(versions):
        await ready_version(stub, "digits")
    await stub.SetAlias(pb.SetAliasRequest(model="digits", alias="production", version=1))
    await stub.SetAlias(pb.SetAliasRequest(model="digits", alias="staging", version=versions))


async def test_create_get_update_delete_with_generations_and_events(stub) -> None:
    await digits(stub)
    created = await stub.CreateDeployment(
        pb.CreateDeploymentRequest(
            name="digits",
            spec=spec(
                ("digits@production", 90),
                ("digits/2", 10),
                shadow="digits@staging",
                max_batch_size=16,
                max_queue_delay_us=0,
                instances=2,
                device="cpu",
                format=pb.MODEL_FORMAT_ONNX,
                preferred_batch_sizes=[8, 2, 8],
                max_queue_size=64,
            ),
        )
    )
    assert created.generation == 1 and created.created_at.seconds > 0
    assert served(created) == [("digits@production", 90), ("digits/2", 10)]
    assert (created.spec.shadow.ref, created.spec.shadow.sample_percent) == ("digits@staging", 100)
    options = created.spec.options
    assert (options.max_batch_size, options.instances, options.device, options.format) == (
        16,
        2,
        "cpu",
        pb.MODEL_FORMAT_ONNX,
    )
    # Preferred sizes are a set: stored sorted, once each (two spellings are one spec).
    assert (list(options.preferred_batch_sizes), options.max_queue_size) == ([2, 8], 64)
    # A delay of 0 is a value of its own (never wait), kept apart from "the replica's setting".
    assert options.HasField("max_queue_delay_us") and options.max_queue_delay_us == 0
    assert await stub.GetDeployment(pb.GetDeploymentRequest(name="digits")) == created

    # An update replaces the whole spec and bumps the generation; options left out are the replica's again.
    updated = await stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(name="digits", spec=spec(("digits@production", 50), ("digits/3", 50)))
    )
    assert updated.generation == 2 and served(updated) == [("digits@production", 50), ("digits/3", 50)]
    assert not updated.spec.HasField("shadow")
    assert not updated.spec.options.HasField("max_queue_delay_us") and updated.spec.options.max_batch_size == 0
    assert not updated.spec.options.preferred_batch_sizes and updated.spec.options.max_queue_size == 0
    assert updated.created_at == created.created_at
    # The same spec again is no change: same generation, no event (a retried update is harmless).
    again = await stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(name="digits", spec=spec(("digits@production", 50), ("digits/3", 50)))
    )
    assert again.generation == 2

    await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="digits"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetDeployment(pb.GetDeploymentRequest(name="digits"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="digits"))
    # The model of the same name is untouched: a deployment only names what is served.
    assert (await stub.GetModel(pb.GetModelRequest(name="digits"))).latest_version == 3

    # Every change is one event, in order, replayed from the log; the deployment filter keeps only its own.
    call = watch(stub, deployments=["digits"])
    events = await take(call, 3)
    call.cancel()
    assert [(e.type, e.deployment, e.generation, e.model) for e in events] == [
        (pb.EVENT_TYPE_DEPLOYMENT_CREATED, "digits", 1, ""),
        (pb.EVENT_TYPE_DEPLOYMENT_UPDATED, "digits", 2, ""),
        (pb.EVENT_TYPE_DEPLOYMENT_DELETED, "digits", 2, ""),
    ]


async def test_a_live_follower_sees_each_change(stub) -> None:
    await digits(stub, versions=2)
    call = watch(stub, from_latest=True, types=DEPLOYMENT_EVENTS)
    await asyncio.sleep(0.2)  # the stream is open before the first change
    await stub.CreateDeployment(pb.CreateDeploymentRequest(name="a", spec=spec(("digits@production", 0))))
    await stub.CreateDeployment(pb.CreateDeploymentRequest(name="b", spec=spec(("digits/2", 100))))
    await stub.SetAlias(pb.SetAliasRequest(model="digits", alias="production", version=2))  # not a deployment event
    await stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(name="a", spec=spec(("digits@production", 70), ("digits/1", 30)))
    )
    await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="b", expected_generation=1))
    events = await take_until(call, lambda e: e.type == pb.EVENT_TYPE_DEPLOYMENT_DELETED)
    call.cancel()
    assert [(pb.EventType.Name(e.type), e.deployment, e.generation) for e in events] == [
        ("EVENT_TYPE_DEPLOYMENT_CREATED", "a", 1),
        ("EVENT_TYPE_DEPLOYMENT_CREATED", "b", 1),
        ("EVENT_TYPE_DEPLOYMENT_UPDATED", "a", 2),
        ("EVENT_TYPE_DEPLOYMENT_DELETED", "b", 1),
    ]
    assert all(e.id > 0 for e in events) and [e.id for e in events] == sorted(e.id for e in events)
    # A single target's weight 0 stored as 100.
    assert served(await stub.GetDeployment(pb.GetDeploymentRequest(name="a"))) == [
        ("digits@production", 70),
        ("digits/1", 30),
    ]


async def test_refs_are_stored_in_canonical_form(stub) -> None:
    await digits(stub, versions=1)
    d = await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits", 0))))
    assert served(d) == [("digits@latest", 100)]
    # 'digits' and 'digits@latest' are one target.
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.UpdateDeployment(
            pb.UpdateDeploymentRequest(name="d", spec=spec(("digits", 50), ("digits@latest", 50)))
        )


BAD_SPECS = {
    "no targets": spec(),
    "weights under 100": spec(("digits@production", 60), ("digits/2", 30)),
    "weights over 100": spec(("digits@production", 90), ("digits/2", 20)),
    "two targets, no weights": spec(("digits@production", 0), ("digits/2", 0)),
    "weight over 100": spec(("digits@production", 101)),
    "negative weight": spec(("digits@production", 110), ("digits/2", -10)),
    "same target twice": spec(("digits/2", 50), ("digits/2", 50)),
    "shadow is a target": spec(("digits@production", 100), shadow="digits@production"),
    "shadow share over 100": spec(("digits@production", 100), shadow="digits@staging", sample=101),
    "bad ref": spec(("digits@@production", 100)),
    "bad alias": spec(("digits@Production", 100)),
    "version 0": spec(("digits/0", 100)),
    "path in ref": spec(("../digits@production", 100)),
    "empty ref": spec(("", 100)),
    "17 targets": spec(*[(f"digits/{i}", 0) for i in range(1, 17)], ("digits@production", 100)),
    "batch size": spec(("digits@production", 100), max_batch_size=5000),
    "negative delay": spec(("digits@production", 100), max_queue_delay_us=-1),
    "long delay": spec(("digits@production", 100), max_queue_delay_us=10_000_001),
    "instances": spec(("digits@production", 100), instances=65),
    "preferred size 0": spec(("digits@production", 100), preferred_batch_sizes=[0]),
    "preferred size over 4096": spec(("digits@production", 100), preferred_batch_sizes=[4097]),
    "17 preferred sizes": spec(("digits@production", 100), preferred_batch_sizes=list(range(1, 18))),
    "queue size": spec(("digits@production", 100), max_queue_size=1_000_001),
    "device": spec(("digits@production", 100), device="tpu"),
    "device path": spec(("digits@production", 100), device="cuda:../0"),
    "unservable format": spec(("digits@production", 100), format=pb.MODEL_FORMAT_PICKLE),
    "edge format": spec(("digits@production", 100), format=pb.MODEL_FORMAT_ORT),
    "unknown format": spec(("digits@production", 100), format=99),  # type: ignore[arg-type]
}


async def test_bad_specs_are_invalid_argument_and_store_nothing(stub) -> None:
    await digits(stub)
    for name in ("", "a/b", "..", "x" * 129, "a b", "-x", "naïve"):
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.CreateDeployment(pb.CreateDeploymentRequest(name=name, spec=spec(("digits@production", 100))))
    for what, bad in BAD_SPECS.items():
        try:
            async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
                await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=bad))
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc
    assert list((await stub.ListDeployments(pb.ListDeploymentsRequest())).deployments) == []

    good = await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100))))
    for bad in BAD_SPECS.values():
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.UpdateDeployment(pb.UpdateDeploymentRequest(name="d", spec=bad))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.UpdateDeployment(
            pb.UpdateDeploymentRequest(name="d", spec=spec(("digits/2", 100)), expected_generation=-1)
        )
    assert await stub.GetDeployment(pb.GetDeploymentRequest(name="d")) == good


async def test_targets_must_resolve_to_ready_versions(stub) -> None:
    await digits(stub)
    pending = await stub.CreateVersion(version_request("digits"))
    failed = await stub.CreateVersion(version_request("digits"))
    await stub.FailVersion(pb.FailVersionRequest(model="digits", version=failed.version, reason="broken"))
    await stub.ArchiveVersion(pb.ArchiveVersionRequest(model="digits", version=2, archived=True))
    await stub.CreateModel(pb.CreateModelRequest(name="empty"))

    not_found = [
        spec(("absent@production", 100)),
        spec(("digits@canary", 100)),
        spec(("digits/99", 100)),
        spec(("empty", 100)),  # no READY version to be its latest
        spec(("digits@production", 100), shadow="absent/1"),
    ]
    not_servable = [
        spec((f"digits/{pending.version}", 100)),
        spec((f"digits/{failed.version}", 100)),
        spec(("digits/2", 100)),  # archived
        spec(("digits@production", 100), shadow=f"digits/{pending.version}"),
    ]
    for bad in not_found:
        async with raises_code(grpc.StatusCode.NOT_FOUND):
            await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=bad))
    for bad in not_servable:
        async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
            await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=bad))
    assert list((await stub.ListDeployments(pb.ListDeploymentsRequest())).deployments) == []

    # An update to an unservable spec leaves the deployment as it was.
    good = await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100))))
    for bad in not_found + not_servable:
        async with raises_code(grpc.StatusCode.NOT_FOUND if bad in not_found else grpc.StatusCode.FAILED_PRECONDITION):
            await stub.UpdateDeployment(pb.UpdateDeploymentRequest(name="d", spec=bad))
    assert await stub.GetDeployment(pb.GetDeploymentRequest(name="d")) == good
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.UpdateDeployment(pb.UpdateDeploymentRequest(name="absent", spec=spec(("digits@production", 100))))


async def test_one_of_racing_creates_wins(stub) -> None:
    await digits(stub, versions=1)
    request = pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100)))
    results = await asyncio.gather(*(stub.CreateDeployment(request) for _ in range(6)), return_exceptions=True)
    won = [r for r in results if isinstance(r, pb.Deployment)]
    lost = [r for r in results if not isinstance(r, pb.Deployment)]
    assert len(won) == 1 and won[0].generation == 1
    assert [e.code() for e in lost] == [grpc.StatusCode.ALREADY_EXISTS] * 5  # type: ignore[union-attr]
    async with raises_code(grpc.StatusCode.ALREADY_EXISTS):
        await stub.CreateDeployment(request)


async def test_expected_generation_makes_concurrent_updates_safe(stub) -> None:
    await digits(stub)
    await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100))))
    # Six writers that all read generation 1: exactly one lands, the others are told to read again.
    attempts = [
        stub.UpdateDeployment(
            pb.UpdateDeploymentRequest(
                name="d", spec=spec(("digits@production", 100 - i), ("digits/3", i)), expected_generation=1
            )
        )
        for i in range(1, 7)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    won = [r for r in results if isinstance(r, pb.Deployment)]
    lost = [r for r in results if not isinstance(r, pb.Deployment)]
    assert len(won) == 1 and won[0].generation == 2
    assert {e.code() for e in lost} == {grpc.StatusCode.ABORTED}  # type: ignore[union-attr]
    now = await stub.GetDeployment(pb.GetDeploymentRequest(name="d"))
    assert now == won[0]

    async with raises_code(grpc.StatusCode.ABORTED):
        await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="d", expected_generation=1))
    moved = await stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(name="d", spec=spec(("digits/2", 100)), expected_generation=2)
    )
    assert moved.generation == 3
    # The same update retried (its answer lost) finds its own change: no conflict, nothing changes.
    retried = await stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(name="d", spec=spec(("digits/2", 100)), expected_generation=2)
    )
    assert retried == moved
    # Without an expected generation an update lands whatever came before.
    assert (
        await stub.UpdateDeployment(pb.UpdateDeploymentRequest(name="d", spec=spec(("digits/1", 100))))
    ).generation == 4
    await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="d", expected_generation=4))


async def test_list_pages_by_name_and_prefix(stub) -> None:
    await digits(stub, versions=1)
    names = ["b-2", "a-1", "b-1", "c", "B-3"]
    for name in names:
        await stub.CreateDeployment(pb.CreateDeploymentRequest(name=name, spec=spec(("digits@production", 100))))
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListDeployments(
            pb.ListDeploymentsRequest(page=common_pb2.PageRequest(page_size=2, page_token=token))
        )
        assert len(page.deployments) <= 2
        seen += [d.name for d in page.deployments]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(names) and len(seen) == len(names)
    prefixed = await stub.ListDeployments(pb.ListDeploymentsRequest(name_prefix="b-"))
    assert [d.name for d in prefixed.deployments] == ["b-1", "b-2"]
    assert all(served(d) == [("digits@production", 100)] for d in prefixed.deployments)
    assert list((await stub.ListDeployments(pb.ListDeploymentsRequest(name_prefix="b/"))).deployments) == []
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.ListDeployments(
            pb.ListDeploymentsRequest(name_prefix="c", page=common_pb2.PageRequest(page_token="x"))
        )


def report(replica: str, generation: int, *targets: tuple[str, int, int], **kwargs: object) -> pb.ReplicaStatus:
    return pb.ReplicaStatus(
        replica=replica,
        generation=generation,
        targets=[pb.TargetStatus(ref=ref, version=v, state=state, **kwargs) for ref, v, state in targets],  # type: ignore[arg-type]
    )


async def test_replicas_report_what_they_serve(stub) -> None:
    await digits(stub)
    await stub.CreateDeployment(
        pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100), shadow="digits@staging"))
    )
    first = await stub.ReportDeploymentStatus(
        pb.ReportDeploymentStatusRequest(
            deployment="d",
            status=report("10.0.0.7:8001", 1, ("digits@production", 1, pb.TARGET_STATE_LOADING)),
        )
    )
    assert first.generation == 1
    await stub.UpdateDeployment(pb.UpdateDeploymentRequest(name="d", spec=spec(("digits/2", 100))))
    behind = await stub.ReportDeploymentStatus(
        pb.ReportDeploymentStatusRequest(
            deployment="d",
            status=pb.ReplicaStatus(
                replica="10.0.0.7:8001",
                generation=1,
                targets=[
                    pb.TargetStatus(ref="digits@production", version=1, state=pb.TARGET_STATE_READY),
                    pb.TargetStatus(
                        ref="digits@staging", version=3, state=pb.TARGET_STATE_FAILED, reason="no onnx", shadow=True
                    ),
                ],
            ),
        )
    )
    assert behind.generation == 2  # the replica learns it has work to do
    await stub.ReportDeploymentStatus(
        pb.ReportDeploymentStatusRequest(
            deployment="d", status=report("pod-b", 2, ("digits/2", 2, pb.TARGET_STATE_READY))
        )
    )
    d = await stub.GetDeployment(pb.GetDeploymentRequest(name="d"))
    assert [(r.replica, r.generation) for r in d.replicas] == [("10.0.0.7:8001", 1), ("pod-b", 2)]
    a = d.replicas[0]
    assert [(t.ref, t.version, t.state, t.reason, t.shadow) for t in a.targets] == [
        ("digits@production", 1, pb.TARGET_STATE_READY, "", False),
        ("digits@staging", 3, pb.TARGET_STATE_FAILED, "no onnx", True),
    ]
    assert a.reported_at.seconds > 0
    # A list says which replicas report at which generation, not what each said of each target.
    listed = (await stub.ListDeployments(pb.ListDeploymentsRequest())).deployments[0].replicas
    assert [(r.replica, r.generation, r.reported_at) for r in listed] == [
        (r.replica, r.generation, r.reported_at) for r in d.replicas
    ]
    assert all(len(r.targets) == 0 for r in listed)

    # A stopped replica's report is removed; reports are not events.
    await stub.ReportDeploymentStatus(
        pb.ReportDeploymentStatusRequest(deployment="d", status=pb.ReplicaStatus(replica="pod-b"), stopped=True)
    )
    assert [r.replica for r in (await stub.GetDeployment(pb.GetDeploymentRequest(name="d"))).replicas] == [
        "10.0.0.7:8001"
    ]
    call = watch(stub, types=DEPLOYMENT_EVENTS)
    assert [e.generation for e in await take(call, 2)] == [1, 2]
    call.cancel()

    # Reports go with their deployment: one created again under the name starts with none.
    await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="d"))
    again = await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits/1", 100))))
    assert again.generation == 1 and list(again.replicas) == []


async def test_bad_reports(stub) -> None:
    await digits(stub, versions=1)
    await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100))))
    ok = ("digits@production", 1, pb.TARGET_STATE_READY)
    invalid = [
        report("", 1, ok),
        report("a/b", 1, ok),
        report("-a", 1, ok),
        report("x" * 129, 1, ok),
        report("r", -1, ok),
        report("r", 1, ("digits@production", 1, pb.TARGET_STATE_UNSPECIFIED)),
        report("r", 1, ("digits@production", 1, 42)),
        report("r", 1, ("digits@@x", 1, pb.TARGET_STATE_READY)),
        report("r", 1, ("digits@production", -1, pb.TARGET_STATE_READY)),
        report("r", 1, ("digits@production", 1, pb.TARGET_STATE_FAILED), reason="x" * 1001),
        report("r", 1, *[(f"digits/{i}", i, pb.TARGET_STATE_READY) for i in range(1, 36)]),
    ]
    for status in invalid:
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.ReportDeploymentStatus(pb.ReportDeploymentStatusRequest(deployment="d", status=status))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.ReportDeploymentStatus(pb.ReportDeploymentStatusRequest(deployment="d", status=report("r", 2, ok)))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.ReportDeploymentStatus(pb.ReportDeploymentStatusRequest(deployment="e", status=report("r", 1, ok)))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.ReportDeploymentStatus(
            pb.ReportDeploymentStatusRequest(deployment="../d", status=report("r", 1, ok))
        )
    assert list((await stub.GetDeployment(pb.GetDeploymentRequest(name="d"))).replicas) == []


async def test_reports_of_at_most_64_replicas(stub) -> None:
    await digits(stub, versions=1)
    await stub.CreateDeployment(pb.CreateDeploymentRequest(name="d", spec=spec(("digits@production", 100))))
    ok = ("digits@production", 1, pb.TARGET_STATE_READY)
    for i in range(64):
        await stub.ReportDeploymentStatus(
            pb.ReportDeploymentStatusRequest(deployment="d", status=report(f"r{i}", 1, ok))
        )
    async with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
        await stub.ReportDeploymentStatus(pb.ReportDeploymentStatusRequest(deployment="d", status=report("r64", 1, ok)))
    # One already there still reports; one that stops makes room.
    await stub.ReportDeploymentStatus(pb.ReportDeploymentStatusRequest(deployment="d", status=report("r7", 1, ok)))
    await stub.ReportDeploymentStatus(
        pb.ReportDeploymentStatusRequest(deployment="d", status=pb.ReplicaStatus(replica="r0"), stopped=True)
    )
    await stub.ReportDeploymentStatus(pb.ReportDeploymentStatusRequest(deployment="d", status=report("r64", 1, ok)))
    replicas = (await stub.GetDeployment(pb.GetDeploymentRequest(name="d"))).replicas
    assert len(replicas) == 64 and "r0" not in {r.replica for r in replicas} and "r64" in {r.replica for r in replicas}
