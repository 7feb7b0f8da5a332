"""Many models in bounded memory: which loaded versions hold memory, and which to evict for a new one.

ModelMesh's model: with a memory limit set, a version is admitted only once its
bytes fit beside what is already held. To make room, the least recently used
loaded versions are evicted - idle ones first, then busy ones, which stop
taking requests at once but keep their memory until their in-flight requests
have finished (the drain), so eviction never cuts a request. A version larger
than the whole limit is refused (RESOURCE_EXHAUSTED): no eviction could make
room for it.

What a version counts is the size of the files its runtime is built from (an
ONNX graph or safetensors weights, and a text model's tokenizer): the weights
the runtime keeps resident, known before the build so that room is made
before anything is allocated. Activations and the runtimes' own arenas are
not counted (the benchmark measures how much they add), so the limit is a cap
on weights, and the process needs headroom beyond it.

One load at a time makes room (a FIFO turn), so two loads never count the
same bytes of a draining version as theirs; once a load's bytes are reserved
it builds while the next one makes room. Everything runs on the event loop:
plain integers and sets suffice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from maas.common import errors

log = logging.getLogger("maas.inference.residency")


class Resident(Hashable, Protocol):
    """What the policy reads of a loaded version (a ServedVersion)."""

    model: str
    version: int
    inflight: int
    last_used: float


R = TypeVar("R", bound=Resident)


@dataclass(eq=False)
class Reservation:
    """Bytes set aside for one version being built; admitted or cancelled exactly once."""

    nbytes: int
    open: bool = True


class Residency(Generic[R]):
    """The bytes held by loaded versions, and the evictions that keep them under the limit.

    `candidates` lists the loaded versions that may be evicted now (the
    manager leaves out those it must keep); `evict` stops serving one and
    drains it, calling `release` once it is closed.
    """

    def __init__(self, limit: int, candidates: Callable[[], Iterable[R]], evict: Callable[[R, str], None]) -> None:
        self.limit = limit
        """Bytes the loaded versions may hold together; 0: no limit."""
        self._candidates = candidates
        self._evict = evict
        self.held: dict[R, int] = {}
        """Every built version not yet closed (serving or draining), and its bytes."""
        self.leaving: set[R] = set()
        """Versions of `held` that stopped serving and free their bytes once drained."""
        self.reserved = 0
        self.evictions = 0
        self._turn = asyncio.Lock()
        self._change: asyncio.Future[None] | None = None

    @property
    def used(self) -> int:
        return sum(self.held.values()) + self.reserved

    def _fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.limit

    async def reserve(self, ref: str, nbytes: int, *, evict: bool) -> Reservation | None:
        """Set `nbytes` aside for `ref`, evicting the least recently used versions when `evict`.

        Without `evict`, None when they do not fit now (the caller loads the
        version later, on its first request). With it, waits until the
        evicted versions have drained; the caller's deadline bounds the wait.
        """
        if not self.limit:
            self.reserved += nbytes
            return Reservation(nbytes)
        if nbytes > self.limit:
            raise errors.ResourceExhausted(
                f"{ref} needs {_size(nbytes)}, more than this replica's memory limit of {_size(self.limit)} "
                "(MAAS_INFERENCE_MEMORY_LIMIT)"
            )
        if not evict:
            if self._turn.locked() or not self._fits(nbytes):
                return None
            self.reserved += nbytes
            return Reservation(nbytes)
        async with self._turn:
            while not self._fits(nbytes):
                self._make_room(ref, nbytes)  # an idle victim may be released at once
                if not self._fits(nbytes):
                    await self._changed()
            self.reserved += nbytes
            return Reservation(nbytes)

    def admit(self, reservation: Reservation, served: R) -> None:
        """The reserved bytes are now held by `served` (built and about to serve)."""
        if reservation.open:
            reservation.open = False
            self.reserved -= reservation.nbytes
            self.held[served] = reservation.nbytes
            self.changed()

    def cancel(self, reservation: Reservation) -> None:
        if reservation.open:
            reservation.open = False
            self.reserved -= reservation.nbytes
            self.changed()

    def retiring(self, served: R) -> None:
        """`served` stopped serving (evicted, swapped out or unloaded); its bytes count until `release`."""
        if served in self.held:
            self.leaving.add(served)

    def release(self, served: R) -> None:
        """`served` is closed: its bytes are free."""
        self.leaving.discard(served)
        if self.held.pop(served, None) is not None:
            self.changed()

    def changed(self) -> None:
        """Something a waiting load may be waiting for happened (bytes freed, a version may be evicted now)."""
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    # -------------------------------------------------------------- internals

    def _make_room(self, ref: str, nbytes: int) -> None:
        coming = sum(self.held[s] for s in self.leaving)
        short = self.used + nbytes - self.limit - coming
        if short <= 0:
            return  # what is draining frees enough
        victims = [s for s in self._candidates() if s in self.held and s not in self.leaving]
        # Least recently used first; of those, idle before busy (a busy one drains first).
        victims.sort(key=lambda s: (s.inflight > 0, s.last_used))
        for victim in victims:
            if short <= 0:
                break
            short -= self.held[victim]
            self.leaving.add(victim)
            self.evictions += 1
            log.info(
                "%s/%s: evicted (least recently used, %s%s) to make room for %s",
                victim.model,
                victim.version,
                _size(self.held[victim]),
                f", draining {victim.inflight} requests" if victim.inflight else "",
                ref,
            )
            self._evict(victim, ref)

    async def _changed(self) -> None:
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._change)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


__all__ = ["Reservation", "Residency"]
