"""Dynamic batching of one served version, with a bounded queue.

Requests are queued on the event loop; a scheduler hands groups of them to
`instances` executor threads that run the model off the loop. The rules:

- A group is sent as soon as an instance is free and one of these holds: it
  fills max_batch_size (or the largest preferred size); its oldest request has
  waited max_queue_delay; or nobody else is expected - every request this
  version has recently had outstanding at once is already queued or running.
  So a lone client (concurrency 1) never waits for a batch window, while under
  load the window lets a batch fill.
- Requests whose deadline has passed, or whose caller went away, are dropped
  before compute. Past max_queue_size queued requests, submit raises
  ResourceExhausted at once.
- Stacking (concatenating along dim 0, one forward pass, splitting back) is
  used when warm-up found a minimum execution size `min_rows` from which each
  row's result is bit-identical whatever its batch (runtimes.probe_min_rows).
  Every execution - a lone request too - is then padded with zero rows up to
  `min_rows`, so a response never depends on what it was batched with and
  equals the same request sent alone. A runtime without such a size computes
  every request of a group on its own rows: the group still shares one
  hand-off to the executor. If a stacked pass fails, its requests are retried
  one by one so a bad request fails alone.
- A `prepare` step, when given, turns the stacked inputs into the model's on
  the executor thread, once per execution (and counts as compute_input): a
  text model's tokenizer, so strings are tokenized batch by batch, never on
  the event loop. Text models stack without the probe (padding to a batch's
  longest text is masked out; see text_runtime).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from maas.common import errors

log = logging.getLogger("maas.inference.batcher")

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32
    """Most rows one execution takes (1: every request runs alone)."""
    max_queue_delay_us: int = 200
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 256
    instances: int = 1
    stack: bool = False
    """Concatenate requests into one forward pass (only for batch-invariant runtimes)."""
    min_rows: int = 1
    """When stacking: every execution is padded with zero rows up to this size."""


@dataclass(slots=True)
class Outcome:
    """What one request got back, with its share of the timings (ns).

    Built once per request on the hot path: a slotted class (a frozen
    dataclass's __init__ costs several times more).
    """

    outputs: list[np.ndarray]
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_rows: int


@dataclass(slots=True)
class Execution:
    """One model execution, for the batch statistics."""

    rows: int
    """Rows of the requests it answered (zero padding not counted)."""
    requests: int
    input_ns: int
    infer_ns: int
    output_ns: int


class _Work:
    """One queued request (a slotted class: one is built per request)."""

    __slots__ = ("arrays", "deadline", "dispatched", "enqueued", "future", "key", "rows")

    def __init__(
        self, arrays: list[np.ndarray], rows: int, deadline: float | None, future: asyncio.Future[Outcome]
    ) -> None:
        self.arrays = arrays
        self.rows = rows
        self.deadline = deadline
        self.future = future
        # Requests stack only with requests of the same row shapes.
        self.key: object = arrays[0].shape[1:] if len(arrays) == 1 else tuple(a.shape[1:] for a in arrays)
        self.enqueued = time.perf_counter_ns()
        self.dispatched = 0


_Done = tuple[list["Outcome | BaseException"], list["Execution"]]


class _Peak:
    """Most requests outstanding at once over roughly the last `window` seconds."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self.current = 0
        self.previous = 0
        self.started = time.monotonic()

    def observe(self, outstanding: int) -> None:
        now = time.monotonic()
        if now - self.started > self.window:
            self.previous = self.current if now - self.started < 2 * self.window else 0
            self.current = 0
            self.started = now
        if outstanding > self.current:
            self.current = outstanding

    @property
    def value(self) -> int:
        return max(self.current, self.previous)


class Batcher:
    def __init__(
        self,
        run: Runner,
        policy: BatchPolicy,
        *,
        name: str = "model",
        on_execution: Callable[[Execution], None] | None = None,
        prepare: Runner | None = None,
    ) -> None:
        self.policy = policy
        self._run = run
        self._prepare = prepare
        self._on_execution = on_execution
        # One thread per instance, fed through a SimpleQueue and answering with one
        # call_soon_threadsafe: a lighter hand-off than run_in_executor's chained futures.
        self._jobs: queue.SimpleQueue[list[_Work] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"infer-{name}-{i}", daemon=True)
            for i in range(max(1, policy.instances))
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Work] = deque()
        self._queued_rows = 0
        self._busy = 0
        self._executing = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._peak = _Peak()
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._delay_ns = policy.max_queue_delay_us * 1000
        self._preferred = max(policy.preferred_batch_sizes, default=0)
        self._max_queue_size = policy.max_queue_size
        self._instances = max(1, policy.instances)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, arrays: list[np.ndarray], rows: int, deadline: float | None = None) -> asyncio.Future[Outcome]:
        """Queue one request; the future resolves with its outputs or its error."""
        if self._closed:
            raise errors.Unavailable("the model version is being unloaded; retry")
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            raise errors.ResourceExhausted(f"the model's queue is full ({self._max_queue_size} requests waiting)")
        loop = self._loop
        if loop is None:
            loop = self._start()
        future: asyncio.Future[Outcome] = loop.create_future()
        queue.append(_Work(arrays, rows, deadline, future))
        self._queued_rows += rows
        self._peak.observe(len(queue) + self._executing)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._schedule)
        return future

    def _start(self) -> asyncio.AbstractEventLoop:
        """On the first request: bind to the running loop and start the instance threads."""
        self._loop = loop = asyncio.get_running_loop()
        for thread in self._threads:
            thread.start()
        return loop

    async def close(self) -> None:
        """Refuse new work, fail what is still queued, wait for running executions."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        while self._queue:
            work = self._queue.popleft()
            if not work.future.done():
                work.future.set_exception(errors.Unavailable("the model version was unloaded; retry"))
        self._queued_rows = 0
        await self._idle.wait()
        for _ in self._threads:
            self._jobs.put(None)

    # ------------------------------------------------------------ scheduling

    def _kick(self) -> None:
        self._timer = None
        if not self._scheduled:
            self._scheduled = True
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = False
        while self._queue and self._busy < self._instances:
            wait_ns = self._wait_ns()
            if wait_ns > 0:
                if self._timer is None:
                    assert self._loop is not None
                    self._timer = self._loop.call_later(wait_ns / 1e9, self._kick)
                return
            group = self._take()
            if group:
                self._dispatch(group)

    def _wait_ns(self) -> int:
        """0 to send now, else how long the oldest request may still wait."""
        policy = self.policy
        if policy.max_batch_size <= 1 or self._delay_ns <= 0:
            return 0
        if self._queued_rows >= policy.max_batch_size:
            return 0
        if self._preferred and self._queued_rows >= self._preferred:
            return 0
        if len(self._queue) + self._executing >= self._peak.value:
            return 0
        waited = time.perf_counter_ns() - self._queue[0].enqueued
        return max(0, self._delay_ns - waited)

    def _take(self) -> list[_Work]:
        policy = self.policy
        limit = max(1, policy.max_batch_size)
        if self._preferred and self._queued_rows < policy.max_batch_size:
            fitting = [p for p in policy.preferred_batch_sizes if p <= self._queued_rows]
            if fitting:
                limit = max(fitting)
        now = time.monotonic()
        group: list[_Work] = []
        kept: list[_Work] = []
        rows = 0
        key = None
        while self._queue:
            work = self._queue.popleft()
            self._queued_rows -= work.rows
            if work.future.done():
                continue
            if work.deadline is not None and now > work.deadline:
                work.future.set_exception(errors.DeadlineExceeded("the deadline passed while the request was queued"))
                continue
            if not group:
                group.append(work)
                rows = work.rows
                key = work.key
                if policy.max_batch_size <= 1:
                    break
                continue
            if rows + work.rows > limit:
                kept.append(work)
                break
            if work.key != key:
                kept.append(work)
                continue
            group.append(work)
            rows += work.rows
        for work in reversed(kept):
            self._queue.appendleft(work)
            self._queued_rows += work.rows
        return group

    def _dispatch(self, group: list[_Work]) -> None:
        self._busy += 1
        self._executing += len(group)
        self._idle.clear()
        now = time.perf_counter_ns()
        for work in group:
            work.dispatched = now
        self._jobs.put(group)

    def _serve(self) -> None:
        """An instance's thread: execute groups until close() sends None."""
        while (group := self._jobs.get()) is not None:
            done: _Done | BaseException
            try:
                done = self._execute(group)
            except BaseException as exc:  # noqa: BLE001 - delivered to every caller of the group
                done = exc
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._finished, group, done)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _finished(self, group: list[_Work], done: _Done | BaseException) -> None:
        self._busy -= 1
        self._executing -= len(group)
        if self._busy == 0:
            self._idle.set()
        results: Sequence[Outcome | BaseException]
        executions: list[Execution]
        if isinstance(done, BaseException):
            results, executions = [done] * len(group), []
        else:
            results, executions = done
        if self._on_execution is not None:
            for execution in executions:
                self._on_execution(execution)
        for work, result in zip(group, results, strict=True):
            future = work.future
            if future.done():
                continue
            if isinstance(result, Outcome):
                future.set_result(result)
            else:
                future.set_exception(result)
        if self._queue and not self._scheduled:
            self._scheduled = True
            self._schedule()

    # ------------------------------------------------------------- execution

    def _execute(self, group: list[_Work]) -> _Done:
        """Runs on an executor thread; statistics are recorded back on the loop."""
        executions: list[Execution] = []
        if not self.policy.stack:
            return [self._alone(work, executions) for work in group], executions
        try:
            return list[Outcome | BaseException](self._stacked(group, executions)), executions
        except Exception as exc:
            if len(group) == 1:
                return [exc], executions
            log.debug("stacked execution failed; running the group's requests one by one", exc_info=True)
        results: list[Outcome | BaseException] = []
        for work in group:
            try:
                results.extend(self._stacked([work], executions))
            except Exception as exc:  # noqa: BLE001 - the caller gets it
                results.append(exc)
        return results, executions

    def _stacked(self, group: list[_Work], executions: list[Execution]) -> list[Outcome]:
        t0 = time.perf_counter_ns()
        rows = sum(w.rows for w in group)
        padded = max(rows, self.policy.min_rows)
        inputs = [_concatenate([w.arrays[i] for w in group], padded) for i in range(len(group[0].arrays))]
        if self._prepare is not None:
            inputs = self._prepare(inputs)  # once for the whole batch (a text model's tokenizer)
        t1 = time.perf_counter_ns()
        try:
            outputs = self._run(inputs)
        except Exception:
            # The failed attempt was an execution too: count it, then the caller retries one by one.
            executions.append(Execution(rows, len(group), t1 - t0, time.perf_counter_ns() - t1, 0))
            raise
        t2 = time.perf_counter_ns()
        parts_of: list[list[np.ndarray]] = []
        start = 0
        for work in group:
            end = start + work.rows
            parts_of.append([out[start:end] for out in outputs])
            start = end
        t3 = time.perf_counter_ns()
        executions.append(Execution(rows, len(group), t1 - t0, t2 - t1, t3 - t2))
        return [
            Outcome(parts, work.dispatched - work.enqueued, t1 - t0, t2 - t1, t3 - t2, rows)
            for work, parts in zip(group, parts_of, strict=True)
        ]

    def _alone(self, work: _Work, executions: list[Execution]) -> Outcome | BaseException:
        try:
            t0 = time.perf_counter_ns()
            inputs = [a if a.flags.writeable else a.copy() for a in work.arrays]
            if self._prepare is not None:
                inputs = self._prepare(inputs)
            t1 = time.perf_counter_ns()
            outputs = self._run(inputs)
            t2 = time.perf_counter_ns()
        except Exception as exc:  # noqa: BLE001 - the caller gets it
            return exc
        executions.append(Execution(work.rows, 1, t1 - t0, t2 - t1, 0))
        return Outcome(outputs, work.dispatched - work.enqueued, t1 - t0, t2 - t1, 0, work.rows)


def _concatenate(arrays: list[np.ndarray], rows: int) -> np.ndarray:
    """Stack along dim 0 into a fresh writable array of `rows` rows, zeros after the given ones."""
    first = arrays[0]
    if len(arrays) == 1 and first.shape[0] == rows and first.flags.writeable:
        return first
    out = np.empty((rows, *first.shape[1:]), dtype=first.dtype)
    start = 0
    for a in arrays:
        out[start : start + a.shape[0]] = a
        start += a.shape[0]
    out[start:] = 0
    return out
