"""Aliases: set, move, delete, resolution, and the rules on their targets."""

from __future__ import annotations

import asyncio

import grpc

from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, ready_version, version_request


async def test_set_move_and_delete(stub) -> None:
    v1 = await ready_version(stub, "m")
    v2 = await ready_version(stub, "m")

    created = await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v1.version))
    assert (created.model, created.alias, created.version, created.previous_version) == ("m", "production", 1, 0)
    assert created.updated_at.seconds > 0
    assert dict((await stub.GetModel(pb.GetModelRequest(name="m"))).aliases) == {"production": 1}
    assert list((await stub.GetVersion(pb.GetVersionRequest(model="m", version=1))).aliases) == ["production"]

    moved = await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v2.version))
    assert (moved.version, moved.previous_version) == (2, 1)
    assert dict((await stub.GetModel(pb.GetModelRequest(name="m"))).aliases) == {"production": 2}
    assert list((await stub.GetVersion(pb.GetVersionRequest(model="m", version=1))).aliases) == []
    assert list((await stub.GetVersion(pb.GetVersionRequest(model="m", version=2))).aliases) == ["production"]

    # Setting it to where it already points changes nothing.
    same = await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v2.version))
    assert same.version == 2

    # Two aliases may point at one version.
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="staging", version=v2.version))
    assert list((await stub.GetVersion(pb.GetVersionRequest(model="m", version=2))).aliases) == [
        "production",
        "staging",
    ]

    await stub.DeleteAlias(pb.DeleteAliasRequest(model="m", alias="production"))
    assert dict((await stub.GetModel(pb.GetModelRequest(name="m"))).aliases) == {"staging": 2}
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@production"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.DeleteAlias(pb.DeleteAliasRequest(model="m", alias="production"))


async def test_resolution_by_alias_and_number(stub) -> None:
    v1 = await ready_version(stub, "m")
    v2 = await ready_version(stub, "m")
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v1.version))
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="canary_2", version=v2.version))

    by_alias = await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@production"))
    assert (by_alias.model, by_alias.version, by_alias.sha256) == ("m", 1, v1.sha256)
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@canary_2"))).version == 2
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m/1"))).version == 1
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m/2"))).sha256 == v2.sha256

    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v2.version))
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@production"))).version == 2

    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m/3"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.ResolveVersion(pb.ResolveVersionRequest(ref="other@production"))


async def test_target_must_be_ready_and_not_archived(stub) -> None:
    ready = await ready_version(stub, "m")
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=ready.version))
    pending = await stub.CreateVersion(version_request("m"))
    failed = await stub.CreateVersion(version_request("m"))
    await stub.FailVersion(pb.FailVersionRequest(model="m", version=failed.version, reason="broken"))
    archived = await ready_version(stub, "m")
    await stub.ArchiveVersion(pb.ArchiveVersionRequest(model="m", version=archived.version, archived=True))

    for target in (pending.version, failed.version, archived.version):
        # Neither a new alias nor a move onto such a version.
        async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
            await stub.SetAlias(pb.SetAliasRequest(model="m", alias="staging", version=target))
        async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
            await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=target))

    model = await stub.GetModel(pb.GetModelRequest(name="m"))
    assert dict(model.aliases) == {"production": ready.version}

    # Restored from the archive, it is a valid target again.
    await stub.ArchiveVersion(pb.ArchiveVersionRequest(model="m", version=archived.version, archived=False))
    moved = await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=archived.version))
    assert (moved.version, moved.previous_version) == (archived.version, ready.version)


async def test_unknown_model_or_version(stub) -> None:
    await ready_version(stub, "m")
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.SetAlias(pb.SetAliasRequest(model="absent", alias="production", version=1))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=9))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.DeleteAlias(pb.DeleteAliasRequest(model="absent", alias="production"))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=0))


async def test_reserved_alias_latest(stub) -> None:
    await ready_version(stub, "m")
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.SetAlias(pb.SetAliasRequest(model="m", alias="latest", version=1))
    assert dict((await stub.GetModel(pb.GetModelRequest(name="m"))).aliases) == {}
    # "latest" still resolves to the newest READY version.
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@latest"))).version == 1


INVALID_ALIASES = ["", "Production", "1st", "_x", "-x", "a/b", "../x", "a b", "a.b", "a@b", "x" * 65, "naïve", "a\x00"]


async def test_invalid_alias_names(stub) -> None:
    await ready_version(stub, "m")
    for alias in INVALID_ALIASES:
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.SetAlias(pb.SetAliasRequest(model="m", alias=alias, version=1))
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.DeleteAlias(pb.DeleteAliasRequest(model="m", alias=alias))
    assert dict((await stub.GetModel(pb.GetModelRequest(name="m"))).aliases) == {}


async def test_longest_valid_alias(stub) -> None:
    await ready_version(stub, "m")
    name = "a" + "b" * 63
    assert (await stub.SetAlias(pb.SetAliasRequest(model="m", alias=name, version=1))).alias == name
    assert (await stub.ResolveVersion(pb.ResolveVersionRequest(ref=f"m@{name}"))).version == 1


async def test_deleting_the_version_takes_its_aliases(stub) -> None:
    v1 = await ready_version(stub, "m")
    await ready_version(stub, "m")
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v1.version))
    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=v1.version, force=True))
    assert dict((await stub.GetModel(pb.GetModelRequest(name="m"))).aliases) == {}
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@production"))


async def released(barrier: asyncio.Barrier, rpc, request) -> grpc.StatusCode:
    """The call's status code, sent once every party is at the barrier."""
    await barrier.wait()
    try:
        await rpc(request)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_set_alias_and_archive_at_once_never_leave_an_alias_on_an_archived_version(stub) -> None:
    """The two checks (target not archived, version held by no alias) race unless the transactions conflict."""
    for _ in range(20):
        target = await ready_version(stub, "m")
        barrier = asyncio.Barrier(2)
        set_code, archive_code = await asyncio.gather(
            released(barrier, stub.SetAlias, pb.SetAliasRequest(model="m", alias="production", version=target.version)),
            released(
                barrier,
                stub.ArchiveVersion,
                pb.ArchiveVersionRequest(model="m", version=target.version, archived=True),
            ),
        )
        # Exactly one wins; the loser is told why.
        assert {set_code, archive_code} == {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}
        archived = (await stub.GetVersion(pb.GetVersionRequest(model="m", version=target.version))).archived
        assert archived == (archive_code == grpc.StatusCode.OK)
        try:
            resolved = await stub.ResolveVersion(pb.ResolveVersionRequest(ref="m@production"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND  # never set yet
            continue
        assert not resolved.archived
        assert (resolved.version == target.version) == (set_code == grpc.StatusCode.OK)
