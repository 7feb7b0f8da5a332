"""The dynamic batcher (in-process, real executor, toy runners) and the batch-invariance probe."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from maas.common import errors
from maas.inference import runtimes
from maas.inference.batcher import Batcher, BatchPolicy, Execution
from maas.inference.tensors import Signature, TensorSpec
from tests.inference import support


class Recording:
    """A runner that doubles its input and records the batches it saw.

    It runs on the batcher's instance thread: each execution announces its size on
    `started` (through the loop, as it begins, before it blocks on the gate), so a
    test waits for "an execution is running" instead of sleeping.
    """

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.batches: list[np.ndarray] = []
        self.gate = gate
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self._loop.call_soon_threadsafe(self.started.put_nowait, int(inputs[0].shape[0]))
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        self.sizes.append(int(inputs[0].shape[0]))
        self.batches.append(inputs[0].copy())
        if (inputs[0] < 0).any():
            raise errors.InvalidArgument("negative input")
        return [inputs[0] * 2]


def row(value: float, rows: int = 1) -> list[np.ndarray]:
    return [np.full((rows, 3), value, dtype=np.float32)]


async def execution_started(runner: Recording) -> int:
    """Wait until the runner has begun one more execution; its rows (it holds its instance while on the gate)."""
    return await asyncio.wait_for(runner.started.get(), timeout=10)


async def test_a_lone_request_is_not_held_for_the_batch_window() -> None:
    runner = Recording()
    # A 30-second window: a lone request that waited for it would time out.
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, max_queue_delay_us=30_000_000, stack=True))
    for i in range(5):
        outcome = await asyncio.wait_for(batcher.submit(row(i), 1), timeout=5)
        np.testing.assert_array_equal(outcome.outputs[0], row(2 * i)[0])
    assert runner.sizes == [1] * 5
    await batcher.close()


async def test_requests_queued_behind_a_running_execution_are_stacked_and_split() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    executions: list[Execution] = []
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True), on_execution=executions.append)
    first = batcher.submit(row(1), 1)
    assert await execution_started(runner) == 1  # the first one is running, blocked on the gate
    rest = [batcher.submit(row(10 + i, rows=1 + i % 2), 1 + i % 2) for i in range(4)]
    gate.set()
    await first
    outcomes = await asyncio.gather(*rest)
    assert runner.sizes == [1, 6]
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs[0], row(2 * (10 + i), rows=1 + i % 2)[0])
        assert outcome.batch_rows == 6
    assert [e.rows for e in executions] == [1, 6]
    await batcher.close()


async def test_without_stacking_each_request_runs_on_its_own_rows() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=False))
    first = batcher.submit(row(1), 1)
    await execution_started(runner)
    rest = [batcher.submit(row(5, rows=2), 2) for _ in range(3)]
    gate.set()
    await asyncio.gather(first, *rest)
    assert runner.sizes == [1, 2, 2, 2]
    await batcher.close()


async def test_a_failing_request_fails_alone_in_a_stacked_group() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True))
    first = batcher.submit(row(1), 1)
    await execution_started(runner)
    good = batcher.submit(row(3), 1)
    bad = batcher.submit(row(-1), 1)
    gate.set()
    await first
    np.testing.assert_array_equal((await good).outputs[0], row(6)[0])
    with pytest.raises(errors.InvalidArgument):
        await bad
    # stacked attempt [3, -1] failed, then each alone
    assert runner.sizes == [1, 2, 1, 1]
    await batcher.close()


async def test_a_full_queue_refuses_at_once() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=1, max_queue_size=2))
    running = batcher.submit(row(1), 1)
    await execution_started(runner)  # off the queue: it holds the only instance
    queued = [batcher.submit(row(1), 1) for _ in range(2)]
    with pytest.raises(errors.ResourceExhausted):
        batcher.submit(row(1), 1)
    gate.set()
    await asyncio.gather(running, *queued)
    await batcher.close()


async def test_expired_requests_are_dropped_before_compute() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True))
    running = batcher.submit(row(1), 1)
    await execution_started(runner)
    expires = time.monotonic() + 0.01
    expired = batcher.submit(row(7), 1, deadline=expires)
    alive = batcher.submit(row(8), 1, deadline=time.monotonic() + 60)
    while time.monotonic() <= expires:  # its deadline (on the batcher's clock) passes while it is queued
        await asyncio.sleep(0.005)
    gate.set()
    await running
    with pytest.raises(errors.DeadlineExceeded):
        await expired
    np.testing.assert_array_equal((await alive).outputs[0], row(16)[0])
    assert runner.sizes == [1, 1]  # the expired row never reached the model
    await batcher.close()


async def test_under_load_the_window_fills_a_batch() -> None:
    """After several requests were seen at once, a lone arrival waits (briefly) for company."""
    runner = Recording()
    # A 5-second window: far longer than the test takes when the batch fills, so the hold
    # observed below cannot end early on a slow machine.
    batcher = Batcher(runner, BatchPolicy(max_batch_size=4, max_queue_delay_us=5_000_000, stack=True))
    # Teach it that four requests arrive together.
    await asyncio.gather(*[batcher.submit(row(i), 1) for i in range(4)])
    assert runner.sizes == [4]
    assert await execution_started(runner) == 4
    first = batcher.submit(row(1), 1)
    await asyncio.sleep(0)  # the scheduling pass that submit asked for runs first
    assert batcher.queued == 1  # held: others are expected (sent, it would have left the queue)
    with pytest.raises(TimeoutError):  # and no execution starts while it waits
        await asyncio.wait_for(runner.started.get(), timeout=0.2)
    assert batcher.queued == 1 and not first.done()
    others = [batcher.submit(row(i), 1) for i in range(3)]
    await asyncio.gather(first, *others)
    assert runner.sizes == [4, 4]
    await batcher.close()


async def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=1))
    running = batcher.submit(row(1), 1)
    await execution_started(runner)
    queued = batcher.submit(row(1), 1)
    closing = asyncio.create_task(batcher.close())
    with pytest.raises(errors.Unavailable):
        await asyncio.wait_for(queued, timeout=10)
    # The queued one failed at once; close still waits for the running execution (held on the gate).
    assert not running.done() and not closing.done()
    gate.set()
    await running
    await closing
    assert runner.sizes == [1]  # the queued request never ran
    with pytest.raises(errors.Unavailable):
        batcher.submit(row(1), 1)


# ------------------------------------------------------- padding to min_rows


async def test_a_lone_request_is_padded_with_zero_rows_to_the_minimum_execution_size() -> None:
    runner = Recording()
    executions: list[Execution] = []
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True, min_rows=4), on_execution=executions.append)
    outcome = await batcher.submit(row(3), 1)
    assert runner.sizes == [4]
    np.testing.assert_array_equal(runner.batches[0], np.vstack([row(3)[0], np.zeros((3, 3), np.float32)]))
    np.testing.assert_array_equal(outcome.outputs[0], row(6)[0])  # only the request's own row comes back
    assert [(e.rows, e.requests) for e in executions] == [(1, 1)]  # statistics count the request's rows
    # A request already as large as the minimum is not padded.
    outcome = await batcher.submit(row(2, rows=5), 5)
    assert runner.sizes == [4, 5] and outcome.outputs[0].shape == (5, 3)
    await batcher.close()


async def test_a_stacked_group_smaller_than_the_minimum_is_padded_once() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True, min_rows=4))
    first = batcher.submit(row(1), 1)
    assert await execution_started(runner) == 4  # the lone first one, padded
    rest = [batcher.submit(row(10 + i), 1) for i in range(2)]
    gate.set()
    await first
    outcomes = await asyncio.gather(*rest)
    assert runner.sizes == [4, 4]
    np.testing.assert_array_equal(runner.batches[1][:2], np.vstack([row(10)[0], row(11)[0]]))
    assert not runner.batches[1][2:].any()
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs[0], row(2 * (10 + i))[0])
    await batcher.close()


async def test_after_a_failed_stacked_execution_each_request_is_retried_padded() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True, min_rows=4))
    first = batcher.submit(row(1), 1)
    await execution_started(runner)
    good, bad = batcher.submit(row(3), 1), batcher.submit(row(-1), 1)
    gate.set()
    await first
    np.testing.assert_array_equal((await good).outputs[0], row(6)[0])
    with pytest.raises(errors.InvalidArgument):
        await bad
    assert runner.sizes == [4, 4, 4, 4]  # first; [3, -1] stacked and failed; then each alone, padded
    await batcher.close()


# ------------------------------------------------------------------- probe


SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 3)),))


class ShapeDependent:
    """Row results that depend on the execution's size below `stable` (as BLAS kernels do), or on position."""

    def __init__(self, stable: int, by_position: bool = False) -> None:
        self.stable = stable
        self.by_position = by_position

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0].astype(np.float32)
        rows = x.shape[0]
        y = x * np.float32(1.1)
        if rows < self.stable:
            y = y + np.float32(1e-3 * rows)
        if self.by_position:
            y = y + np.arange(rows, dtype=np.float32)[:, None] * np.float32(1e-3)
        return [y]


def test_probe_finds_the_smallest_size_from_which_rows_are_batch_invariant() -> None:
    assert runtimes.probe_min_rows(ShapeDependent(stable=1), SIGNATURE, 32) == 1  # type: ignore[arg-type]
    assert runtimes.probe_min_rows(ShapeDependent(stable=4), SIGNATURE, 32) == 4  # type: ignore[arg-type]
    assert runtimes.probe_min_rows(ShapeDependent(stable=5), SIGNATURE, 32) == 8  # type: ignore[arg-type]
    assert runtimes.probe_min_rows(ShapeDependent(stable=13), SIGNATURE, 32) == 16  # type: ignore[arg-type]
    # No power of two <= max works, or results depend on the row's position: no stacking at all.
    assert runtimes.probe_min_rows(ShapeDependent(stable=20), SIGNATURE, 24) is None  # type: ignore[arg-type]
    assert runtimes.probe_min_rows(ShapeDependent(1, by_position=True), SIGNATURE, 32) is None  # type: ignore[arg-type]


def test_probe_of_a_torch_network_gives_rows_identical_in_every_execution_from_that_size() -> None:
    """Whatever size this CPU needs, every execution of at least that size answers a row with the same bits."""
    import torch

    module = support.torch_model(support.MLP_ARCH, seed=1)
    torch.set_num_threads(1)
    runtime = runtimes.TorchRuntime(module, "cpu")
    signature = Signature((TensorSpec("input", "FP32", (-1, 64)),), (TensorSpec("logits", "FP32", (-1, 10)),))
    min_rows = runtimes.probe_min_rows(runtime, signature, 32)
    assert min_rows is not None
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    alone = support.expected(module, x, min_rows)
    for size in (min_rows, min_rows + 1, 17, 32):
        batch = rng.standard_normal((size, 64)).astype(np.float32)
        position = int(rng.integers(0, size))
        batch[position] = x[0]
        assert runtime.run([batch])[0][position].tobytes() == alone[0].tobytes(), size
