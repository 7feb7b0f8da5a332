"""The memory limit's policy: what it evicts for a new version, and when a load must wait.

In process, on the policy alone (`Residency`): the versions are plain records
of what it reads (model, version, requests in flight, last use), and eviction
is what the manager does with it - the version stops serving, drains, then
frees its bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from maas.common import errors
from maas.inference.residency import Residency


@dataclass(eq=False)
class Loaded:
    model: str
    version: int = 1
    inflight: int = 0
    last_used: float = 0.0


class Replica:
    """The manager's side: which versions serve, and evicted ones released once drained."""

    def __init__(self, limit: int) -> None:
        self.serving: list[Loaded] = []
        self.evicted: list[str] = []
        self.draining: dict[str, Loaded] = {}
        self.residency: Residency[Loaded] = Residency(limit, lambda: list(self.serving), self.evict)

    def evict(self, victim: Loaded, for_ref: str) -> None:
        self.serving.remove(victim)
        self.evicted.append(victim.model)
        self.residency.retiring(victim)
        if victim.inflight:
            self.draining[victim.model] = victim
        else:
            self.residency.release(victim)

    def drained(self, model: str) -> None:
        self.residency.release(self.draining.pop(model))

    async def load(
        self, model: str, nbytes: int, *, used_at: float = 0.0, evict: bool = True, busy: bool = False
    ) -> Loaded | None:
        """Reserve, build and serve `model`; `busy`: a request is in flight from the start."""
        reservation = await self.residency.reserve(model, nbytes, evict=evict)
        if reservation is None:
            return None
        loaded = Loaded(model, inflight=int(busy), last_used=used_at)
        self.residency.admit(reservation, loaded)
        self.serving.append(loaded)
        return loaded


async def test_evicts_the_least_recently_used_and_only_as_many_as_the_new_version_needs() -> None:
    replica = Replica(limit=300)
    a = await replica.load("a", 100, used_at=3.0)
    await replica.load("b", 100, used_at=1.0)
    await replica.load("c", 100, used_at=2.0)
    assert replica.residency.used == 300 and replica.evicted == []
    await replica.load("d", 100, used_at=4.0)
    assert replica.evicted == ["b"]
    await replica.load("e", 150, used_at=5.0)  # needs two: c (used at 2) and then a (at 3)
    assert replica.evicted == ["b", "c", "a"]
    assert a not in replica.residency.held
    assert replica.residency.used == 250 and replica.residency.evictions == 3


async def test_an_idle_version_goes_before_a_busy_one_even_if_used_more_recently() -> None:
    replica = Replica(limit=200)
    busy = await replica.load("busy", 100, used_at=1.0)
    await replica.load("idle", 100, used_at=2.0)
    assert busy is not None
    busy.inflight = 3
    await replica.load("new", 100)
    assert replica.evicted == ["idle"]


async def test_a_busy_victim_keeps_its_bytes_until_it_has_drained() -> None:
    replica = Replica(limit=200)
    first = await replica.load("first", 100, used_at=1.0)
    second = await replica.load("second", 100, used_at=2.0)
    assert first is not None and second is not None
    first.inflight = second.inflight = 1
    load = asyncio.create_task(replica.load("third", 100))
    await asyncio.sleep(0.01)
    assert replica.evicted == ["first"]  # the least recently used, though busy: it drains first
    assert not load.done() and replica.residency.used == 200
    replica.drained("first")
    assert await asyncio.wait_for(load, 1) is not None
    assert replica.evicted == ["first"] and replica.residency.used == 200


async def test_two_loads_do_not_count_the_same_draining_bytes() -> None:
    replica = Replica(limit=200)
    for model, used_at in (("a", 1.0), ("b", 2.0)):
        loaded = await replica.load(model, 100, used_at=used_at)
        assert loaded is not None
        loaded.inflight = 1
    loads = [asyncio.create_task(replica.load(m, 100, used_at=3.0, busy=True)) for m in ("x", "y")]
    await asyncio.sleep(0.01)
    assert replica.evicted == ["a"]  # x's room; y waits its turn rather than counting on a's bytes
    replica.drained("a")
    await asyncio.sleep(0.01)
    assert loads[0].done() and not loads[1].done()
    assert replica.evicted == ["a", "b"]
    replica.drained("b")
    await asyncio.wait_for(asyncio.gather(*loads), 1)
    assert replica.residency.used == 200


async def test_without_eviction_a_version_that_does_not_fit_is_left_for_later() -> None:
    replica = Replica(limit=200)
    await replica.load("a", 150)
    assert await replica.load("b", 100, evict=False) is None
    assert replica.evicted == [] and replica.residency.used == 150
    assert await replica.load("c", 50, evict=False) is not None


async def test_a_version_larger_than_the_limit_is_refused_whatever_is_loaded() -> None:
    replica = Replica(limit=200)
    await replica.load("a", 100)
    with pytest.raises(errors.ResourceExhausted, match="memory limit"):
        await replica.load("huge", 201)
    assert replica.evicted == [] and replica.residency.used == 100


async def test_no_limit_admits_everything() -> None:
    replica = Replica(limit=0)
    for i in range(20):
        await replica.load(f"m{i}", 1 << 30)
    assert replica.evicted == [] and replica.residency.used == 20 << 30


async def test_a_cancelled_load_gives_its_reservation_back() -> None:
    replica = Replica(limit=200)
    reservation = await replica.residency.reserve("a", 150, evict=True)
    assert reservation is not None and replica.residency.used == 150
    replica.residency.cancel(reservation)
    replica.residency.cancel(reservation)  # once only
    assert replica.residency.used == 0
