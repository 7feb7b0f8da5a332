"""Shadow traffic: copies of a deployment's requests go to its shadow, whose answers are compared, never returned.

Once a caller's request has been answered (by whichever target the split
chose), a copy of it is queued for the served name's shadow - every request,
or the deployment's sample percent of them, drawn from the request id as the
split is. The copy runs in a task of its own, off the caller's path: the
caller's answer is already computed and does not wait for it, and nothing a
shadow does - fail, time out, hang - reaches a caller. What a shadow may hold
is bounded: at most `shadow_max_inflight` copies are outstanding in the
replica at once (past it a copy is dropped and counted), each has
`shadow_timeout` seconds, and the shadow's own queue bound still holds.

Each copy is counted by outcome, per served name, answering version and
shadow version: `agree` or `disagree` with the answer the caller got,
`incomparable` (no output of the same name), `failed`, `timeout` or `dropped`.
Agreement is per output of the same name and shape: a float output of shape
[..., K] with K >= 2 (a classifier's logits or probabilities) agrees when each
row's argmax is the same, any other when np.allclose holds (rtol 1e-3, atol
1e-5; BYTES and integers exactly). The shadow's own requests count in its
version's statistics, as every version's do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from time import monotonic, perf_counter_ns

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from maas.common import errors
from maas.inference import validation
from maas.inference.domain import InferRequest, InferResult
from maas.inference.served import ServedVersion
from maas.inference.tensors import TensorSpec
from maas.inference.traffic import Layouts, Target, sampled

log = logging.getLogger("maas.inference.shadow")

OUTCOMES = ("agree", "disagree", "incomparable", "failed", "timeout", "dropped")

Outputs = list[tuple[TensorSpec, np.ndarray]]
FailureFn = Callable[[ServedVersion, int, BaseException], None]


def agree(primary: Outputs, shadow: Outputs) -> bool | None:
    """Whether the shadow answered as the caller's version did; None when no output can be compared."""
    theirs = {spec.name: array for spec, array in shadow}
    compared = False
    for spec, mine in primary:
        other = theirs.get(spec.name)
        if other is None:
            continue
        compared = True
        if not _same(mine, other):
            return False
    return True if compared else None


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    floats = a.dtype.kind == "f" and b.dtype.kind == "f"
    if floats and a.ndim >= 2 and a.shape[-1] >= 2:
        return bool(np.array_equal(a.argmax(axis=-1), b.argmax(axis=-1)))
    if floats:
        return bool(np.allclose(a, b, rtol=1e-3, atol=1e-5, equal_nan=True))
    return bool(np.array_equal(a, b))


class ShadowMetrics:
    """The Prometheus side: a counter by outcome and the agreement rate of each shadow version."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.copies = Counter(
            "maas_inference_shadow_requests",
            "Copies of requests sent to a deployment's shadow, by outcome (agree, disagree, incomparable, failed, "
            "timeout, dropped); version: the one that answered the caller.",
            ["model", "version", "shadow_version", "outcome"],
            registry=registry,
        )
        self.agreement = Gauge(
            "maas_inference_shadow_agreement_ratio",
            "Share of compared copies whose shadow answer agreed with the caller's (argmax for classifiers).",
            ["model", "shadow_version"],
            registry=registry,
        )


class Shadow:
    def __init__(
        self,
        manager: Layouts[Target],
        failed: FailureFn,
        *,
        max_inflight: int,
        timeout: float,
        metrics: ShadowMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.manager = manager
        self.failed = failed
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.tallies: dict[tuple[str, int, int], dict[str, int]] = {}
        """Copies by (served name, answering version, shadow version) and outcome (shadow 0: none was loaded)."""
        self.running: set[asyncio.Task[None]] = set()

    def mirror(self, request: InferRequest, result: InferResult) -> None:
        """Copy an answered request to its served name's shadow, if it has one: returns at once."""
        others = self.manager.companions.get(request.model_name)
        if not others:
            return
        entry = next((e for e in others if e.shadow), None)
        if entry is None or not sampled(entry.weight, request.id, self.rng):
            return
        name, answered, served = request.model_name, result.served.version, entry.current
        if served is None:  # still loading, failed: nothing to compare with
            self._count(name, answered, 0, "dropped")
            return
        if len(self.running) >= self.max_inflight:
            self._count(name, answered, served.version, "dropped")
            return
        task = asyncio.get_running_loop().create_task(self._copy(served, request, result))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    def tally(self, name: str, answered: int, shadow: int) -> dict[str, int]:
        key = (name, answered, shadow)
        found = self.tallies.get(key)
        if found is None:
            found = self.tallies[key] = dict.fromkeys(OUTCOMES, 0)
        return found

    async def close(self, *, cancel: bool = False) -> None:
        """Wait for the copies still running (each ends within its timeout); `cancel`: stop them first (a shutdown)."""
        if cancel:
            for task in self.running:
                task.cancel()
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    async def _copy(self, served: ServedVersion, request: InferRequest, result: InferResult) -> None:
        name, answered = request.model_name, result.served.version
        outcome = "failed"
        start = perf_counter_ns()
        try:
            outcome = await self._answer(served, request, result.outputs, start)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised
            log.debug("%s: shadow %s failed: %s", name, served.version, exc)
        finally:
            self._count(name, answered, served.version, outcome)

    async def _answer(self, served: ServedVersion, request: InferRequest, primary: Outputs, start: int) -> str:
        try:
            parsed = validation.parse(request, served.signature, served.limits)
            future = served.submit(parsed, monotonic() + self.timeout)
        except Exception as exc:
            self.failed(served, start, exc)
            raise
        try:
            outcome = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            self.failed(served, start, errors.DeadlineExceeded("the shadow copy timed out"))
            return "timeout"
        except Exception as exc:
            self.failed(served, start, exc)
            raise
        finally:
            served.release()
        served.recorder.success(outcome, perf_counter_ns() - start, parsed.rows)
        same = agree(primary, list(zip(served.signature.outputs, outcome.outputs, strict=True)))
        return "incomparable" if same is None else "agree" if same else "disagree"

    def _count(self, name: str, answered: int, shadow: int, outcome: str) -> None:
        self.tally(name, answered, shadow)[outcome] += 1
        if self.metrics is None:
            return
        self.metrics.copies.labels(name, str(answered), str(shadow), outcome).inc()
        if outcome in ("agree", "disagree"):
            rate = self.agreement(name, shadow)
            if rate is not None:
                self.metrics.agreement.labels(name, str(shadow)).set(rate)

    def agreement(self, name: str, shadow: int) -> float | None:
        """The agreement rate of one shadow version over every version that answered."""
        agreed = compared = 0
        for (n, _, s), tally in self.tallies.items():
            if n == name and s == shadow:
                agreed += tally["agree"]
                compared += tally["agree"] + tally["disagree"]
        return agreed / compared if compared else None
