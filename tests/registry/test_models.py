"""Registered models through the real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
from sqlalchemy.engine import make_url

from maas.registry.db import migrate
from maas.registry.db.database import Database
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.conftest import PG_ADMIN_URL
from tests.helpers import raises_code, ready_version, version_request
from tests.registry.conftest import serving

BAD_NAMES = [
    "",
    "../etc",
    "..",
    "a/../b",
    "a/b",
    "..\\windows",
    "%2e%2e%2f",
    "..%252f",
    "file:///etc/passwd",
    "//proc/self/root",
    "a#/../",
    "nul\x00byte",
    "x" * 129,
    "x" * 10_000,
    "-starts-with-dash",
    ".hidden",
    "white space",
    "a..b",
]


async def test_create_get_and_update(stub) -> None:
    created = await stub.CreateModel(pb.CreateModelRequest(name="digits", description="d", tags={"team": "vision"}))
    assert created.name == "digits" and created.tags == {"team": "vision"} and created.latest_version == 0
    fetched = await stub.GetModel(pb.GetModelRequest(name="digits"))
    assert fetched == created

    updated = await stub.UpdateModel(
        pb.UpdateModelRequest(name="digits", description="new", set_tags={"stage": "dev"}, delete_tags=["team"])
    )
    assert updated.description == "new"
    assert dict(updated.tags) == {"stage": "dev"}
    # An unset optional description leaves it alone.
    again = await stub.UpdateModel(pb.UpdateModelRequest(name="digits", set_tags={"stage": "prod"}))
    assert again.description == "new" and again.tags["stage"] == "prod"


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_invalid_argument(stub, name: str) -> None:
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateModel(pb.CreateModelRequest(name=name))
    # Nothing was created by the refused calls.
    listed = await stub.ListModels(pb.ListModelsRequest())
    assert list(listed.models) == []


async def test_unknown_model_is_not_found(stub) -> None:
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetModel(pb.GetModelRequest(name="nope"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.UpdateModel(pb.UpdateModelRequest(name="nope", description="x"))


async def test_concurrent_creates_of_one_name(stub) -> None:
    results = await asyncio.gather(
        *(stub.CreateModel(pb.CreateModelRequest(name="race")) for _ in range(20)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, pb.Model)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert len(failed) == 19
    assert {e.code() for e in failed} == {grpc.StatusCode.ALREADY_EXISTS}


async def test_list_pages_prefix_and_tags(stub) -> None:
    for i in range(25):
        tags = {"team": "a" if i % 2 else "b"}
        await stub.CreateModel(pb.CreateModelRequest(name=f"m{i:02d}", tags=tags))
    await stub.CreateModel(pb.CreateModelRequest(name="other"))

    seen: list[str] = []
    token = ""
    while True:
        resp = await stub.ListModels(
            pb.ListModelsRequest(name_prefix="m", page=common_pb2.PageRequest(page_size=10, page_token=token))
        )
        seen.extend(m.name for m in resp.models)
        token = resp.next_page_token
        if not token:
            break
    assert seen == [f"m{i:02d}" for i in range(25)]

    tagged = await stub.ListModels(pb.ListModelsRequest(tags=[common_pb2.TagFilter(key="team", value="a")]))
    assert [m.name for m in tagged.models] == [f"m{i:02d}" for i in range(25) if i % 2]
    any_team = await stub.ListModels(pb.ListModelsRequest(tags=[common_pb2.TagFilter(key="team")]))
    assert len(any_team.models) == 25


async def test_page_token_is_bound_to_its_query(stub) -> None:
    for i in range(3):
        await stub.CreateModel(pb.CreateModelRequest(name=f"p{i}"))
    first = await stub.ListModels(pb.ListModelsRequest(page=common_pb2.PageRequest(page_size=1)))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.ListModels(
            pb.ListModelsRequest(name_prefix="p", page=common_pb2.PageRequest(page_token=first.next_page_token))
        )
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.ListModels(pb.ListModelsRequest(page=common_pb2.PageRequest(page_token="garbage!!")))


async def test_prefix_with_like_wildcards_is_literal(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="a_b"))
    await stub.CreateModel(pb.CreateModelRequest(name="axb"))
    resp = await stub.ListModels(pb.ListModelsRequest(name_prefix="a_"))
    assert [m.name for m in resp.models] == ["a_b"]


async def test_delete_refused_while_aliased_unless_forced(stub, artifact_root) -> None:
    version = await ready_version(stub, "held")
    await stub.SetAlias(pb.SetAliasRequest(model="held", alias="production", version=version.version))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.DeleteModel(pb.DeleteModelRequest(name="held"))
    assert (await stub.GetModel(pb.GetModelRequest(name="held"))).aliases["production"] == 1

    await stub.DeleteModel(pb.DeleteModelRequest(name="held", force=True))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetModel(pb.GetModelRequest(name="held"))
    # Its blob is gone with it.
    assert not any(artifact_root.glob("blobs/sha256/*/*"))
    # The name can be registered afresh, numbering from 1 again.
    await stub.CreateModel(pb.CreateModelRequest(name="held"))
    again = await ready_version(stub, "held")
    assert again.version == 1


async def test_delete_refused_while_versions_are_ready_unless_forced(stub) -> None:
    ready = await ready_version(stub, "kept")
    failed = await stub.CreateVersion(version_request("kept"))
    await stub.FailVersion(pb.FailVersionRequest(model="kept", version=failed.version, reason="x"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DeleteModel(pb.DeleteModelRequest(name="kept"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The refusal says what a forced delete removes.
    assert "2 versions (1 READY)" in (refused.value.details() or "")
    assert (await stub.GetVersion(pb.GetVersionRequest(model="kept", version=ready.version))).sha256 == ready.sha256

    await stub.DeleteModel(pb.DeleteModelRequest(name="kept", force=True))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetModel(pb.GetModelRequest(name="kept"))


async def test_delete_of_only_pending_and_failed_versions_needs_no_force(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="empty"))
    await stub.CreateVersion(version_request("empty"))
    failed = await stub.CreateVersion(version_request("empty"))
    await stub.FailVersion(pb.FailVersionRequest(model="empty", version=failed.version, reason="x"))
    await stub.DeleteModel(pb.DeleteModelRequest(name="empty"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetModel(pb.GetModelRequest(name="empty"))


async def test_delete_without_aliases(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="gone"))
    await stub.DeleteModel(pb.DeleteModelRequest(name="gone"))
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.DeleteModel(pb.DeleteModelRequest(name="gone"))


async def test_tag_validation(stub) -> None:
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateModel(pb.CreateModelRequest(name="t", tags={"../k": "v"}))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateModel(pb.CreateModelRequest(name="t", tags={"k": "v" * 6000}))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateModel(pb.CreateModelRequest(name="t", description="x\x00y"))


async def test_prefix_is_case_sensitive_on_every_backend(stub) -> None:
    for name in ("Alpha", "alpha", "ALPHA", "al.pha", "al-pha", "al_pha", "alp", "alq", "am", "b"):
        await stub.CreateModel(pb.CreateModelRequest(name=name))

    async def listed(prefix: str) -> list[str]:
        return sorted(m.name for m in (await stub.ListModels(pb.ListModelsRequest(name_prefix=prefix))).models)

    assert await listed("al") == ["al-pha", "al.pha", "al_pha", "alp", "alpha", "alq"]
    assert await listed("Al") == ["Alpha"]
    assert await listed("alp") == ["alp", "alpha"]
    assert await listed("alpha") == ["alpha"]
    assert await listed("al-") == ["al-pha"]
    assert await listed("al.") == ["al.pha"]
    # LIKE's wildcards are plain characters.
    assert await listed("al_") == ["al_pha"]
    assert await listed("al%") == []
    assert await listed("%") == []
    assert await listed("_") == []
    assert await listed("A") == ["ALPHA", "Alpha"]


async def test_prefix_is_case_sensitive_on_postgresql_in_a_linguistic_locale(tmp_path) -> None:
    """Most PostgreSQL databases compare text by locale (en-US: 'al' < 'Alpha' < 'am'); the filter must not."""
    admin = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    name = f"maas_test_icu_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'")
    url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    try:
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        async with serving(url, tmp_path / "artifacts") as (_, stub):
            for model in ("Alpha", "alpha", "am"):
                await stub.CreateModel(pb.CreateModelRequest(name=model))
            listed = await stub.ListModels(pb.ListModelsRequest(name_prefix="al"))
            assert [m.name for m in listed.models] == ["alpha"]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
