"""The dynamic batcher, in-process with a real executor and toy runners."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from maas.common import errors
from maas.inference.batcher import Batcher, BatchPolicy, Execution


class Recording:
    """A runner that doubles its input and records the batch sizes it saw."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.sizes.append(int(inputs[0].shape[0]))
        if (inputs[0] < 0).any():
            raise errors.InvalidArgument("negative input")
        return [inputs[0] * 2]


def row(value: float, rows: int = 1) -> list[np.ndarray]:
    return [np.full((rows, 3), value, dtype=np.float32)]


async def test_a_lone_request_is_not_held_for_the_batch_window() -> None:
    runner = Recording()
    # A one-second window: a lone request that waited for it would take a second.
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, max_queue_delay_us=1_000_000, stack=True))
    for i in range(5):
        outcome = await asyncio.wait_for(batcher.submit(row(i), 1), timeout=0.5)
        np.testing.assert_array_equal(outcome.outputs[0], row(2 * i)[0])
    assert runner.sizes == [1] * 5
    await batcher.close()


async def test_requests_queued_behind_a_running_execution_are_stacked_and_split() -> None:
    gate = threading.Event()
    runner = Recording(gate)
    executions: list[Execution] = []
    batcher = Batcher(runner, BatchPolicy(max_batch_size=8, stack=True), on_execution=executions.append)
    first = batcher.submit(row(1), 1)
    await asyncio.sleep(0.05)  # the first one is now running (blocked on the gate)
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
    await asyncio.sleep(0.05)
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
    await asyncio.sleep(0.05)
    good = batcher.submit(row(3), 1)
    bad = batcher.submit(row(-1), 1)
    gate.set()
    await first
    np.testing.assert_array_equal((await good).outputs[0], row(6)[0])
    with pytest.raises(errors.InvalidArgument):
        await bad
    # stacked attempt [3, -1] failed, then each alone
    assert runner.sizes[-2:] == [1, 1]
    await batcher.close()


async def test_a_full_queue_refuses_at_once() -> None:
    gate = threading.Event()
    batcher = Batcher(Recording(gate), BatchPolicy(max_batch_size=1, max_queue_size=2))
    running = batcher.submit(row(1), 1)
    await asyncio.sleep(0.05)
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
    await asyncio.sleep(0.05)
    expired = batcher.submit(row(7), 1, deadline=time.monotonic() + 0.01)
    alive = batcher.submit(row(8), 1, deadline=time.monotonic() + 10)
    await asyncio.sleep(0.05)
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
    batcher = Batcher(runner, BatchPolicy(max_batch_size=4, max_queue_delay_us=2_000_000, stack=True))
    # Teach it that four requests arrive together.
    await asyncio.gather(*[batcher.submit(row(i), 1) for i in range(4)])
    runner.sizes.clear()
    first = batcher.submit(row(1), 1)
    await asyncio.sleep(0.05)
    assert not first.done()  # held: others are expected
    others = [batcher.submit(row(i), 1) for i in range(3)]
    await asyncio.gather(first, *others)
    assert runner.sizes == [4]
    await batcher.close()


async def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    gate = threading.Event()
    batcher = Batcher(Recording(gate), BatchPolicy(max_batch_size=1))
    running = batcher.submit(row(1), 1)
    await asyncio.sleep(0.05)
    queued = batcher.submit(row(1), 1)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.05)
    with pytest.raises(errors.Unavailable):
        await queued
    gate.set()
    await running
    await closing
    with pytest.raises(errors.Unavailable):
        batcher.submit(row(1), 1)
