"""WatchEvents: past then live, resumable, filtered, across restarts and replicas."""

from __future__ import annotations

import asyncio
import random

import grpc

from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, ready_version, version_request
from tests.registry.conftest import serving

# A bound on every wait, so a lost event fails the test instead of hanging it.
WAIT = 30.0


async def take(call, n: int) -> list[pb.Event]:
    out: list[pb.Event] = []
    async with asyncio.timeout(WAIT):
        while len(out) < n:
            event = await call.read()
            assert event is not grpc.aio.EOF, f"stream ended after {len(out)} of {n} events"
            out.append(event)
    return out


async def take_until(call, done) -> list[pb.Event]:
    out: list[pb.Event] = []
    async with asyncio.timeout(WAIT):
        while True:
            event = await call.read()
            assert event is not grpc.aio.EOF
            out.append(event)
            if done(event):
                return out


def kinds(events: list[pb.Event]) -> list[tuple[str, str, int]]:
    return [(pb.EventType.Name(e.type).removeprefix("EVENT_TYPE_"), e.model, e.version) for e in events]


def watch(stub, after_id: int = 0, **kwargs):
    return stub.WatchEvents(pb.WatchEventsRequest(after_id=after_id, **kwargs))


async def test_past_then_live_in_id_order(stub) -> None:
    v1 = await ready_version(stub, "m")
    call = watch(stub)
    past = await take(call, 3)
    assert kinds(past) == [("MODEL_CREATED", "m", 0), ("VERSION_CREATED", "m", 1), ("VERSION_READY", "m", 1)]
    assert past[0].created_at.seconds > 0

    # Live: every kind of change, in the order it happened.
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v1.version))
    v2 = await ready_version(stub, "m")
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=v2.version))
    await stub.DeleteAlias(pb.DeleteAliasRequest(model="m", alias="production"))
    v3 = await stub.CreateVersion(version_request("m"))
    await stub.FailVersion(pb.FailVersionRequest(model="m", version=v3.version, reason="x"))
    await stub.ArchiveVersion(pb.ArchiveVersionRequest(model="m", version=v1.version, archived=True))
    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=v1.version))
    await stub.DeleteModel(pb.DeleteModelRequest(name="m", force=True))
    live = await take(call, 10)
    call.cancel()
    assert kinds(live) == [
        ("ALIAS_MOVED", "m", 1),
        ("VERSION_CREATED", "m", 2),
        ("VERSION_READY", "m", 2),
        ("ALIAS_MOVED", "m", 2),
        ("ALIAS_DELETED", "m", 2),
        ("VERSION_CREATED", "m", 3),
        ("VERSION_FAILED", "m", 3),
        ("VERSION_ARCHIVED", "m", 1),
        ("VERSION_DELETED", "m", 1),
        ("MODEL_DELETED", "m", 0),
    ]
    assert (live[0].alias, live[0].previous_version) == ("production", 0)
    assert (live[3].alias, live[3].previous_version) == ("production", 1)
    ids = [e.id for e in past + live]
    assert ids == list(range(1, 14))

    # A second watcher replays exactly the same log.
    again = watch(stub)
    assert await take(again, 13) == past + live
    again.cancel()


async def test_resume_after_disconnects_while_writes_continue(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="w"))
    writes = 80

    async def writer() -> None:
        for i in range(writes):
            await stub.CreateVersion(version_request("w"))
            if i % 10 == 0:
                await asyncio.sleep(0.01)
        await stub.CreateModel(pb.CreateModelRequest(name="done"))

    writing = asyncio.create_task(writer())
    rng = random.Random(7)
    seen: list[pb.Event] = []
    reconnects = 0
    async with asyncio.timeout(WAIT * 2):
        while not seen or seen[-1].model != "done":
            call = watch(stub, seen[-1].id if seen else 0)
            # Read a few, then drop the stream, as a flaky network would.
            for _ in range(rng.randint(1, 12)):
                event = await call.read()
                assert event is not grpc.aio.EOF
                seen.append(event)
                if event.model == "done":
                    break
            call.cancel()
            reconnects += 1
    await writing
    assert reconnects > 3
    ids = [e.id for e in seen]
    assert ids == list(range(1, writes + 3)), "no event lost, none repeated, in order"
    assert [e.version for e in seen if e.type == pb.EVENT_TYPE_VERSION_CREATED] == list(range(1, writes + 1))


async def test_filters_by_model_and_type(stub) -> None:
    await ready_version(stub, "a")
    await ready_version(stub, "b")
    by_model = watch(stub, models=["b"])
    assert kinds(await take(by_model, 3)) == [
        ("MODEL_CREATED", "b", 0),
        ("VERSION_CREATED", "b", 1),
        ("VERSION_READY", "b", 1),
    ]
    by_type = watch(stub, types=[pb.EVENT_TYPE_VERSION_READY, pb.EVENT_TYPE_ALIAS_MOVED])
    assert kinds(await take(by_type, 2)) == [("VERSION_READY", "a", 1), ("VERSION_READY", "b", 1)]
    both = watch(stub, models=["a", "c"], types=[pb.EVENT_TYPE_VERSION_CREATED])
    assert kinds(await take(both, 1)) == [("VERSION_CREATED", "a", 1)]

    # Live: what does not match is skipped; the next match arrives next.
    await ready_version(stub, "a")
    await stub.SetAlias(pb.SetAliasRequest(model="b", alias="production", version=1))
    await ready_version(stub, "c")
    assert kinds(await take(by_model, 1)) == [("ALIAS_MOVED", "b", 1)]
    assert kinds(await take(by_type, 3)) == [
        ("VERSION_READY", "a", 2),
        ("ALIAS_MOVED", "b", 1),
        ("VERSION_READY", "c", 1),
    ]
    assert kinds(await take(both, 2)) == [("VERSION_CREATED", "a", 2), ("VERSION_CREATED", "c", 1)]
    for call in (by_model, by_type, both):
        call.cancel()


async def test_from_latest_skips_the_past(stub) -> None:
    await ready_version(stub, "old")
    call = watch(stub, from_latest=True)
    first = asyncio.ensure_future(call.read())
    # When the server takes "now" is its business: keep writing until the
    # watcher sees something, which must then be new, never the past.
    written = 0
    async with asyncio.timeout(WAIT):
        while not first.done():
            await stub.CreateModel(pb.CreateModelRequest(name=f"new{written}"))
            written += 1
            await asyncio.wait([first], timeout=0.05)
    event = first.result()
    assert event.type == pb.EVENT_TYPE_MODEL_CREATED and event.model.startswith("new")
    assert event.id > 3
    # From there on, nothing is skipped.
    await stub.CreateModel(pb.CreateModelRequest(name="last"))
    rest = await take_until(call, lambda e: e.model == "last")
    assert [e.id for e in [event, *rest]] == list(range(event.id, 3 + written + 2))
    call.cancel()


async def test_invalid_requests(stub) -> None:
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await watch(stub, -1).read()
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await watch(stub, types=[pb.EVENT_TYPE_UNSPECIFIED]).read()


async def test_resume_across_a_registry_restart(db_url, tmp_path) -> None:
    root = tmp_path / "artifacts"
    async with serving(db_url, root) as (_, first):
        await ready_version(first, "m")
        call = watch(first)
        before = await take(call, 2)
        call.cancel()
    # The first registry is gone; a new one on the same database carries on.
    async with serving(db_url, root) as (_, second):
        await ready_version(second, "m")
        resumed = watch(second, before[-1].id)
        after = await take(resumed, 3)
        resumed.cancel()
    assert kinds(before + after) == [
        ("MODEL_CREATED", "m", 0),
        ("VERSION_CREATED", "m", 1),
        ("VERSION_READY", "m", 1),
        ("VERSION_CREATED", "m", 2),
        ("VERSION_READY", "m", 2),
    ]
    assert [e.id for e in before + after] == [1, 2, 3, 4, 5]


async def test_two_registries_on_one_database(db_url, tmp_path) -> None:
    root = tmp_path / "artifacts"
    async with serving(db_url, root) as (_, a), serving(db_url, root) as (_, b):
        on_a = watch(a)
        on_b = watch(b, models=["m"])
        await a.CreateModel(pb.CreateModelRequest(name="m"))
        # Writes through B, seen by the watcher on A (B's log, polled by A).
        for _ in range(5):
            await b.CreateVersion(version_request("m"))
        await a.CreateVersion(version_request("m"))
        events_a = await take(on_a, 7)
        events_b = await take(on_b, 7)
        on_a.cancel()
        on_b.cancel()
    expected = [("MODEL_CREATED", "m", 0)] + [("VERSION_CREATED", "m", n) for n in range(1, 7)]
    assert kinds(events_a) == expected
    assert events_a == events_b
    assert [e.id for e in events_a] == list(range(1, 8))
