"""The traffic split and the shadow, in process, on real served versions (runtime, batcher, statistics).

The layouts are plain records of what the split reads of the manager (each
served name's main entry and its other targets); a request goes the data
plane's way: route, validate, queue, await, answer, then the copy to the
shadow. Nothing here imports the generated protocol modules (see conftest).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from maas.common import errors
from maas.inference import validation
from maas.inference.batcher import BatchPolicy
from maas.inference.domain import InferRequest, InferResult, InputTensor, ModelOptions
from maas.inference.served import ServedVersion
from maas.inference.shadow import Shadow, ShadowMetrics, agree
from maas.inference.statistics import Recorder, Statistics
from maas.inference.tensors import Signature, TensorSpec
from maas.inference.traffic import Split, choose, point, sampled
from maas.inference.validation import Limits

WIDTH = 4
SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, WIDTH)),), (TensorSpec("logits", "FP32", (-1, 3)),))
LIMITS = Limits(max_batch_size=8, max_elements=10_000)
POINT_OF_REQ_7 = 748340078040981744
TOLERANCE = 0.03  # of the requests: a 90/10 split over 2,000 ids lands within 3 points of 10%


class Runtime:
    """Answers every row with the logits `fn` gives (a stand-in for onnxruntime/torch: the batcher runs it)."""

    platform = "test"
    backend = "test"
    device = "cpu"

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn = fn

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [self.fn(inputs[0])]

    def close(self) -> None:
        pass


def logits(winner: int) -> Callable[[np.ndarray], np.ndarray]:
    """Class `winner` wins, by a margin that depends on the input (so outputs differ between requests)."""

    def fn(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], 3), np.float32)
        out[:, winner] = 10.0 + x.sum(axis=1)
        return out

    return fn


@dataclass(eq=False)
class Entry:
    """What the split reads of one of the manager's entries."""

    current: ServedVersion | None
    weight: int = 100
    shadow: bool = False
    cold: bool = False


@dataclass
class Layout:
    """The manager's side: each served name's main entry and its other targets."""

    models: dict[str, Entry] = field(default_factory=dict)
    companions: dict[str, tuple[Entry, ...]] = field(default_factory=dict)

    def serve(self, name: str, *entries: Entry) -> None:
        main = max((e for e in entries if not e.shadow), key=lambda e: e.weight)
        self.models[name] = main
        self.companions[name] = tuple(e for e in entries if e is not main)

    def lookup(self, name: str, version: str) -> ServedVersion:
        """As the manager's: a version among all the targets, else the main entry's (or why it cannot answer)."""
        main = self.models.get(name)
        if main is None:
            raise errors.NotFound(f"{name} is not served")
        for entry in [main, *self.companions.get(name, ())] if version else [main]:
            if entry.current is not None and not entry.shadow and version in ("", entry.current.version_str):
                return entry.current
        raise errors.Unavailable(f"{name} cannot answer")


statistics = Statistics()


def served(version: int, runtime: Runtime | Gate, name: str = "digits") -> ServedVersion:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_us=0, max_queue_size=64)
    recorder = Recorder(statistics.for_version(name, version))
    return ServedVersion(name, version, runtime, SIGNATURE, policy, LIMITS, recorder, ModelOptions())


def request(request_id: str = "", name: str = "digits", version: str = "", value: float = 0.5) -> InferRequest:
    row = np.full((1, WIDTH), value, np.float32)
    return InferRequest(name, version, request_id, [InputTensor("x", "FP32", (1, WIDTH), None)], [row.tobytes()], [])


async def answer(split: Split, shadow: Shadow | None, req: InferRequest) -> InferResult:
    """One request the data plane's way: the caller's answer, then its copy to the shadow."""
    version = split.route(req.model_name, req.model_version, req.id)
    parsed = validation.parse(req, version.signature, version.limits)
    future = version.submit(parsed, None)
    try:
        outcome = await asyncio.wait_for(future, 10)
    finally:
        version.release()
    result = InferResult(version, req.id, list(zip(version.signature.outputs, outcome.outputs, strict=True)))
    if shadow is not None:
        shadow.mirror(req, result)
    return result


def ids(n: int) -> Iterator[str]:
    return (f"req-{i}" for i in range(n))


# ---------------------------------------------------------------- the split


def canary(layout: Layout, main_weight: int = 90) -> tuple[ServedVersion, ServedVersion]:
    stable, new = served(1, Runtime(logits(0))), served(2, Runtime(logits(1)))
    layout.serve("digits", Entry(stable, main_weight), Entry(new, 100 - main_weight))
    return stable, new


def test_a_90_10_split_over_2000_request_ids_lands_within_3_points() -> None:
    layout = Layout()
    stable, new = canary(layout)
    split = Split(layout)
    answered = [split.route("digits", "", i) for i in ids(2000)]
    share = sum(v is new for v in answered) / len(answered)
    assert abs(share - 0.10) <= TOLERANCE, share
    assert all(v is stable or v is new for v in answered)


def test_requests_without_an_id_split_by_weight_at_random() -> None:
    layout = Layout()
    _, new = canary(layout)
    split = Split(layout, random.Random(14))
    share = sum(split.route("digits", "", "") is new for _ in range(2000)) / 2000
    assert abs(share - 0.10) <= TOLERANCE, share


def test_the_same_request_id_always_lands_on_the_same_version_in_every_replica() -> None:
    layout = Layout()
    canary(layout, 50)
    first, second = Split(layout), Split(layout, random.Random(1))  # two replicas
    for request_id in ids(300):
        chosen = {first.route("digits", "", request_id).version for _ in range(3)}
        chosen.add(second.route("digits", "", request_id).version)
        assert len(chosen) == 1, request_id
    # An id's point is blake2b's, not Python's per-process hash: the same in every process and release.
    assert point("req-7", b"split") == POINT_OF_REQ_7
    assert choose([90, 10], 0) == 0 and choose([90, 10], (1 << 64) - 1) == 1


def test_a_version_the_client_names_is_not_split() -> None:
    layout = Layout()
    canary(layout)
    split = Split(layout)
    assert {split.route("digits", "2", i).version for i in ids(200)} == {2}
    assert {split.route("digits", "1", i).version for i in ids(200)} == {1}


def test_a_target_that_cannot_answer_gives_its_share_to_the_others_and_no_other_id_moves() -> None:
    layout = Layout()
    a, b, c = served(1, Runtime(logits(0))), served(2, Runtime(logits(1))), served(3, Runtime(logits(2)))
    entries = Entry(a, 50), Entry(b, 30), Entry(c, 20)
    layout.serve("digits", *entries)
    split = Split(layout)
    before = {i: split.route("digits", "", i).version for i in ids(2000)}
    entries[1].current = None  # version 2 fails, or is still loading
    after = {i: split.route("digits", "", i).version for i in ids(2000)}
    assert 2 not in after.values()
    assert all(after[i] == v for i, v in before.items() if v != 2)  # ids of versions that are up stay put
    moved = [after[i] for i, v in before.items() if v == 2]
    assert abs(moved.count(1) / len(moved) - 50 / 70) <= 0.1  # spread by the remaining weights, 50:20


def test_the_share_of_a_main_target_out_of_memory_waits_for_its_load_rather_than_move() -> None:
    layout = Layout()
    _, new = canary(layout)
    main = layout.models["digits"]
    main.current, main.cold = None, True  # evicted under the memory limit: its next request loads it
    split = Split(layout)
    waited = 0
    for request_id in ids(500):
        try:
            assert split.route("digits", "", request_id) is new
        except errors.Unavailable:  # the manager's lookup raises NotLoaded here: the data plane loads it
            waited += 1
    assert 400 <= waited < 500  # the main target's ids (90%) wait; the canary's go on


def test_a_name_none_of_whose_targets_can_answer_says_why() -> None:
    layout = Layout()
    canary(layout)
    for entry in [layout.models["digits"], *layout.companions["digits"]]:
        entry.current = None
    with pytest.raises(errors.Unavailable):
        Split(layout).route("digits", "", "req-1")


# --------------------------------------------------------------- the shadow


class Gate:
    """A shadow runtime that holds each execution until the test opens it, or fails."""

    platform = "test"
    backend = "test"
    device = "cpu"

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray] | None = None, *, hold: bool = True) -> None:
        self.fn = fn
        self.entered = threading.Event()
        self.open = threading.Event()
        if not hold:
            self.open.set()
        self.calls = 0

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        self.entered.set()
        if not self.open.wait(30):
            raise RuntimeError("never opened")
        if self.fn is None:
            raise RuntimeError("the shadow is broken")
        return [self.fn(inputs[0])]

    def close(self) -> None:
        self.open.set()


def record(version: ServedVersion, start: int, exc: BaseException) -> None:
    version.recorder.failure(time.perf_counter_ns() - start, type(exc).__name__)


@dataclass
class Shadowed:
    """A served name whose one target (version 1) answers and whose shadow (version 9) gets the copies."""

    layout: Layout
    split: Split
    shadow: Shadow
    main: ServedVersion
    metrics: CollectorRegistry


def with_shadow(runtime: Gate, *, percent: int = 100, max_inflight: int = 64, timeout: float = 10.0) -> Shadowed:
    layout = Layout()
    main = served(1, Runtime(logits(0)))
    layout.serve("digits", Entry(main, 100), Entry(served(9, runtime), percent, shadow=True))
    metrics = CollectorRegistry()
    shadow = Shadow(layout, record, max_inflight=max_inflight, timeout=timeout, metrics=ShadowMetrics(metrics))
    return Shadowed(layout, Split(layout), shadow, main, metrics)


def copies(metrics: CollectorRegistry, outcome: str, shadow_version: str = "9") -> float:
    value = metrics.get_sample_value(
        "maas_inference_shadow_requests_total",
        {"model": "digits", "version": "1", "shadow_version": shadow_version, "outcome": outcome},
    )
    return value or 0.0


async def test_a_shadow_that_hangs_holds_no_caller_and_changes_no_answer() -> None:
    gate = Gate(logits(0))
    d = with_shadow(gate)
    alone = Split(Layout({"digits": Entry(d.main)}))
    # By construction: the shadow holds every copy until the callers are done, so a caller that
    # waited on it would time out here (answer waits at most 10 s; the gate, 30).
    results = [await answer(d.split, d.shadow, request(f"r{i}", value=i)) for i in range(20)]
    assert gate.entered.wait(5) and not gate.open.is_set()  # the copies are in the shadow, still held
    for i, result in enumerate(results):
        assert result.served is d.main
        expected = (await answer(alone, None, request(f"r{i}", value=i))).outputs[0][1]
        np.testing.assert_array_equal(result.outputs[0][1], expected)
    assert len(d.shadow.running) == 20
    gate.open.set()
    await d.shadow.close()
    assert d.shadow.tally("digits", 1, 9)["agree"] == 20


async def test_a_shadow_that_sleeps_adds_no_caller_latency_beyond_50ms_at_p99() -> None:
    """Callers of a served name with a shadow sleeping 1 s per copy, interleaved with callers of the same version alone."""

    def sleepy(x: np.ndarray) -> np.ndarray:
        time.sleep(1.0)
        return logits(0)(x)

    d = with_shadow(Gate(sleepy, hold=False), max_inflight=8)
    alone = Split(Layout({"digits": Entry(d.main)}))
    timings: dict[str, list[float]] = {"shadowed": [], "alone": []}
    for i in range(300):
        for kind, route, copy in (("shadowed", d.split, d.shadow), ("alone", alone, None)):
            start = time.perf_counter()
            result = await answer(route, copy, request(f"{kind}-{i}", value=i % 7))
            timings[kind].append(time.perf_counter() - start)
            assert result.served is d.main
    p99 = {kind: float(np.percentile(t, 99)) for kind, t in timings.items()}
    print(f"caller p99 over 300 requests each: {p99}")
    assert p99["shadowed"] < p99["alone"] + 0.050, p99
    assert copies(d.metrics, "dropped") >= 250  # 8 copies sleep at once at most; the rest are dropped, counted
    for task in d.shadow.running:
        task.cancel()
    await d.shadow.close()


async def test_a_failing_shadow_changes_no_answer_and_is_counted() -> None:
    d = with_shadow(Gate(None, hold=False))
    for i in range(10):
        result = await answer(d.split, d.shadow, request(f"r{i}"))
        assert result.served is d.main and int(result.outputs[0][1].argmax()) == 0
    await d.shadow.close()
    assert copies(d.metrics, "failed") == 10
    assert sum(statistics.for_version("digits", 9).failures.values()) >= 10  # in the shadow version's statistics


async def test_a_shadow_past_its_timeout_is_counted_and_the_copies_past_the_bound_are_dropped() -> None:
    gate = Gate(logits(0))
    d = with_shadow(gate, max_inflight=2, timeout=1.0)
    for i in range(6):
        await answer(d.split, d.shadow, request(f"r{i}"))
    assert len(d.shadow.running) == 2
    await d.shadow.close()
    gate.open.set()
    assert copies(d.metrics, "timeout") == 2 and copies(d.metrics, "dropped") == 4


async def test_agreement_is_counted_and_rated_per_shadow_version() -> None:
    d = with_shadow(Gate(logits(0), hold=False))
    for i in range(4):
        await answer(d.split, d.shadow, request(f"a{i}"))
        await d.shadow.close()
    d.layout.companions["digits"] = (Entry(served(9, Runtime(logits(2))), 100, shadow=True),)  # it answers class 2
    await answer(d.split, d.shadow, request("b"))
    await d.shadow.close()
    assert copies(d.metrics, "agree") == 4 and copies(d.metrics, "disagree") == 1
    rate = d.metrics.get_sample_value(
        "maas_inference_shadow_agreement_ratio", {"model": "digits", "shadow_version": "9"}
    )
    assert rate == pytest.approx(0.8)


def test_a_sampled_shadow_gets_its_share_of_requests_drawn_from_the_id() -> None:
    rng = random.Random(3)
    share = sum(sampled(25, i, rng) for i in ids(2000)) / 2000
    assert abs(share - 0.25) <= 0.04, share  # 4 standard deviations of a 25% share of 2,000 ids (here 28.4%)
    assert [sampled(25, i, rng) for i in ids(50)] == [sampled(25, i, random.Random()) for i in ids(50)]
    assert all(sampled(100, i, rng) for i in ids(50)) and not any(sampled(0, i, rng) for i in ids(50))


def test_agreement_compares_classifiers_by_argmax_and_other_outputs_by_closeness() -> None:
    logits_spec, score = TensorSpec("logits", "FP32", (-1, 3)), TensorSpec("score", "FP32", (-1, 1))
    a = np.array([[0.1, 0.3, 2.0]], np.float32)
    assert agree([(logits_spec, a)], [(logits_spec, a * 3)]) is True  # other values, same class
    assert agree([(logits_spec, a)], [(logits_spec, a[:, ::-1].copy())]) is False
    assert agree([(score, np.array([[1.0]]))], [(score, np.array([[1.0 + 1e-6]]))]) is True
    assert agree([(score, np.array([[1.0]]))], [(score, np.array([[1.1]]))]) is False
    assert agree([(score, np.array([[1.0]]))], [(score, np.array([[1.0, 1.0]]))]) is False  # shapes differ
    assert agree([(score, np.array([[1.0]]))], [(logits_spec, a)]) is None  # nothing of the same name
