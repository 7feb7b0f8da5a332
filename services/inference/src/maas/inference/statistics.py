"""Per model and version counters, as ModelStatistics reports them.

Updated on the event loop only (the batcher hands execution records back to
the loop), so plain integers suffice. The Prometheus counters are read from
here at scrape time (metrics.py); each recorder also feeds an observer (the
latency histograms) when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time_ns
from typing import Protocol

from maas.inference.batcher import Execution, Outcome


class Observer(Protocol):
    def success(self, outcome: Outcome, total_ns: int, rows: int) -> None: ...

    def execution(self, execution: Execution) -> None: ...


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class VersionStats:
    model: str
    version: int
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchDurations] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    loads: Duration = field(default_factory=Duration)
    """Builds of this version into memory, from resolving it to serving it."""
    cold_loads: Duration = field(default_factory=Duration)
    """The loads a request waited for (it was evicted, or not loaded yet): the cold starts."""
    last_load_ns: int = 0
    evictions: int = 0
    memory_bytes: int = 0
    """What this version counts against the memory limit while it is loaded (0 once closed)."""


class Recorder:
    """Where one served version reports what happened to its requests."""

    def __init__(self, stats: VersionStats, metrics: Observer | None = None) -> None:
        self.stats = stats
        self.metrics = metrics

    def success(self, outcome: Outcome, total_ns: int, rows: int) -> None:
        # Once per request: the additions inlined (no method call per counter).
        s = self.stats
        d = s.success
        d.count += 1
        d.ns += total_ns
        d = s.queue
        d.count += 1
        d.ns += outcome.queue_ns
        d = s.compute_input
        d.count += 1
        d.ns += outcome.input_ns
        d = s.compute_infer
        d.count += 1
        d.ns += outcome.infer_ns
        d = s.compute_output
        d.count += 1
        d.ns += outcome.output_ns
        s.inference_count += rows
        s.last_inference_ms = time_ns() // 1_000_000
        if self.metrics is not None:
            self.metrics.success(outcome, total_ns, rows)

    def failure(self, total_ns: int, reason: str) -> None:
        s = self.stats
        s.fail.add(total_ns)
        s.failures[reason] = s.failures.get(reason, 0) + 1
        s.last_inference_ms = time_ns() // 1_000_000

    def execution(self, execution: Execution) -> None:
        s = self.stats
        s.execution_count += 1
        b = s.batches.get(execution.rows)
        if b is None:
            b = s.batches[execution.rows] = BatchDurations()
        b.compute_input.add(execution.input_ns)
        b.compute_infer.add(execution.infer_ns)
        b.compute_output.add(execution.output_ns)
        if self.metrics is not None:
            self.metrics.execution(execution)


class Statistics:
    """Every version's stats since the process started (kept after an unload)."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, int], VersionStats] = {}
        self.memory_limit = 0
        """The replica's memory limit in bytes (0: none), for the metrics."""

    def for_version(self, model: str, version: int) -> VersionStats:
        key = (model, version)
        stats = self._by_version.get(key)
        if stats is None:
            stats = self._by_version[key] = VersionStats(model, version)
        return stats

    def select(self, model: str = "", version: int | None = None) -> list[VersionStats]:
        return [
            s
            for (m, v), s in sorted(self._by_version.items())
            if (not model or m == model) and (version is None or v == version)
        ]
