"""The traffic split: which of a served name's targets answers one request.

A deployment's targets carry whole-percent weights that sum to 100. A request
that names no version is answered by one of them, drawn by weight: from its
request id when it has one - the id's blake2b hash taken as a point in
[0, 100) - so that a retry of the same id lands on the same version; at
random otherwise. A request that names a version gets that version.

A target that cannot answer now (still loading, failed) gives its share to
the others: an id whose own target is up still lands on it, and only the ids
of the missing one are spread, by weight, over those that are up (a second,
independent point of the same id). The one exception is the served name's
main entry kept out of memory by the memory limit: its share waits for its
load (`NotLoaded`, as for a name with one target) rather than move.

The shadow is not a target here: it answers no caller (see `shadow`). Whether
a request is copied to it is drawn the same way, from its own point of the id.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Protocol, TypeVar

from maas.inference.served import ServedVersion


class Target(Protocol):
    """What the split reads of one target (the manager's ModelEntry)."""

    @property
    def weight(self) -> int: ...
    @property
    def shadow(self) -> bool: ...
    @property
    def cold(self) -> bool: ...
    @property
    def current(self) -> ServedVersion | None: ...


T = TypeVar("T", bound=Target, covariant=True)


class Layouts(Protocol[T]):
    """What the split reads of the manager: each served name's main entry and its other targets.

    A protocol rather than the manager itself so that this module (and its
    in-process tests) never import the generated protocol modules the manager's
    converters do.
    """

    @property
    def models(self) -> Mapping[str, T]: ...
    @property
    def companions(self) -> Mapping[str, Sequence[T]]: ...
    def lookup(self, name: str, version: str) -> ServedVersion: ...


def point(request_id: str, salt: bytes) -> int:
    """The id's 64-bit hash: the same id, the same point, in every process and release."""
    return int.from_bytes(blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8, salt=salt).digest())


def choose(weights: Sequence[int], at: int) -> int:
    """The index whose share of sum(weights) holds `at` (a point in [0, 2**64)); weights are >= 0, one > 0."""
    total = sum(weights)
    scaled = (at * total) >> 64  # in [0, total): with weights summing to 100, the id's percent
    for index, weight in enumerate(weights):
        if scaled < weight:
            return index
        scaled -= weight
    raise ValueError("no positive weight")


def sampled(percent: int, request_id: str, rng: random.Random) -> bool:
    """Whether a request falls in a `percent` share (the shadow's sample): by its id, else at random."""
    if percent >= 100:
        return True
    at = point(request_id, b"shadow") if request_id else rng.getrandbits(64)
    return (at * 100) >> 64 < percent


class Split:
    """Routes each request to one of its served name's targets (the manager keeps which these are)."""

    def __init__(self, manager: Layouts[Target], rng: random.Random | None = None) -> None:
        self.manager = manager
        self.rng = rng or random.Random()

    def route(self, name: str, version: str, request_id: str) -> ServedVersion:
        """The version that answers a request for `name` (and `version`, "" for any); raises what lookup raises."""
        others = self.manager.companions.get(name)
        if version or not others:
            return self.manager.lookup(name, version)  # one target, or the client chose
        main = self.manager.models.get(name)
        targets = [e for e in [*([main] if main is not None else []), *others] if not e.shadow and e.weight > 0]
        if not targets:
            return self.manager.lookup(name, version)
        chosen = self._draw(targets, request_id, b"split")
        if chosen.current is not None:
            return chosen.current
        if chosen is main and main.cold:
            return self.manager.lookup(name, version)  # raises NotLoaded: the request waits for its load
        up = [e for e in targets if e.current is not None]
        if not up:
            return self.manager.lookup(name, version)  # why the name cannot answer
        served = self._draw(up, request_id, b"spread").current
        assert served is not None
        return served

    def _draw(self, targets: list[Target], request_id: str, salt: bytes) -> Target:
        at = point(request_id, salt) if request_id else self.rng.getrandbits(64)
        return targets[choose([e.weight for e in targets], at)]
