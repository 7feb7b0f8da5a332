"""Prometheus metrics of the inference service, with Triton's names where one exists.

Triton's per-model counters keep their exact names and `model`/`version`
labels (nv_inference_request_success, nv_inference_request_failure with a
`reason`, nv_inference_count, nv_inference_exec_count, the cumulative
nv_inference_*_duration_us, nv_inference_pending_request_count), so dashboards
built for Triton read them. They are read from the statistics at scrape time
rather than counted twice per request; they are exposed untyped because
prometheus_client would append `_total` to a counter's name. Histograms and
gauges Triton lacks are `maas_inference_*`: among them the memory limit's
(the bytes each loaded version counts, the limit, evictions, and the time
of each load, a request's cold start apart from the others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from maas.inference.batcher import Execution, Outcome
from maas.inference.statistics import Statistics

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# (model, version) -> requests queued or executing
PendingFn = Callable[[], dict[tuple[str, int], int]]
# state -> number of versions in it
StatesFn = Callable[[], dict[str, int]]


class _TritonCollector(Collector):
    def __init__(self, statistics: Statistics, pending: PendingFn, states: StatesFn) -> None:
        self._statistics = statistics
        self._pending = pending
        self._states = states

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}

        def family(name: str, doc: str) -> Metric:
            metric = families.get(name)
            if metric is None:
                metric = families[name] = Metric(name, doc, "unknown")
            return metric

        for s in self._statistics.select():
            labels = {"model": s.model, "version": str(s.version)}
            family("nv_inference_request_success", "Successful inference requests.").add_sample(
                "nv_inference_request_success", labels, s.success.count
            )
            failures = family("nv_inference_request_failure", "Failed inference requests, by reason.")
            for reason, count in sorted(s.failures.items()):
                failures.add_sample("nv_inference_request_failure", {**labels, "reason": reason}, count)
            for name, doc, value in (
                ("nv_inference_count", "Inferences performed (batch rows).", s.inference_count),
                ("nv_inference_exec_count", "Model executions (batches).", s.execution_count),
                (
                    "nv_inference_request_duration_us",
                    "Cumulative request time (us).",
                    (s.success.ns + s.fail.ns) // 1000,
                ),
                ("nv_inference_queue_duration_us", "Cumulative queue time (us).", s.queue.ns // 1000),
                ("nv_inference_compute_input_duration_us", "Cumulative input time (us).", s.compute_input.ns // 1000),
                (
                    "nv_inference_compute_infer_duration_us",
                    "Cumulative execution time (us).",
                    s.compute_infer.ns // 1000,
                ),
                (
                    "nv_inference_compute_output_duration_us",
                    "Cumulative output time (us).",
                    s.compute_output.ns // 1000,
                ),
                ("maas_inference_evictions", "Times the memory limit evicted this version.", s.evictions),
            ):
                family(name, doc).add_sample(name, labels, value)
            if s.memory_bytes:
                family(
                    "maas_inference_memory_bytes", "Bytes a loaded version counts against the memory limit."
                ).add_sample("maas_inference_memory_bytes", labels, s.memory_bytes)
        yield from families.values()
        limit = GaugeMetricFamily("maas_inference_memory_limit_bytes", "The replica's memory limit (0: none).")
        limit.add_metric([], self._statistics.memory_limit)
        yield limit
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count", "Requests queued or executing.", labels=["model", "version"]
        )
        for (model, version), count in sorted(self._pending().items()):
            pending.add_metric([model, str(version)], count)
        yield pending
        states = GaugeMetricFamily(
            "maas_inference_model_versions", "Model versions known to this process, by state.", labels=["state"]
        )
        for state, count in sorted(self._states().items()):
            states.add_metric([state], count)
        yield states


class InferenceMetrics:
    def __init__(
        self, registry: CollectorRegistry, statistics: Statistics, pending: PendingFn, states: StatesFn
    ) -> None:
        registry.register(_TritonCollector(statistics, pending, states))
        labels = ["model", "version"]
        self.request_seconds = Histogram(
            "maas_inference_request_duration_seconds",
            "End-to-end time of successful inference requests.",
            labels,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.queue_seconds = Histogram(
            "maas_inference_queue_duration_seconds",
            "Time requests waited for an execution.",
            labels,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_rows = Histogram(
            "maas_inference_batch_size", "Rows per model execution.", labels, registry=registry, buckets=BATCH_BUCKETS
        )
        self.load_seconds = Histogram(
            "maas_inference_load_duration_seconds",
            "Time from resolving a version to serving it; cold: a request was waiting for it (a cold start).",
            [*labels, "cold"],
            registry=registry,
            buckets=LOAD_BUCKETS,
        )

    def loaded(self, model: str, version: int, ns: int, cold: bool) -> None:
        self.load_seconds.labels(model, str(version), "true" if cold else "false").observe(ns / 1e9)

    def for_version(self, model: str, version: int) -> VersionMetrics:
        return VersionMetrics(self, model, str(version))


class VersionMetrics:
    """The histogram children of one version, resolved once."""

    def __init__(self, m: InferenceMetrics, model: str, version: str) -> None:
        self.request_h = m.request_seconds.labels(model, version)
        self.queue_h = m.queue_seconds.labels(model, version)
        self.batch_h = m.batch_rows.labels(model, version)

    def success(self, outcome: Outcome, total_ns: int, rows: int) -> None:
        self.request_h.observe(total_ns / 1e9)
        self.queue_h.observe(outcome.queue_ns / 1e9)

    def execution(self, execution: Execution) -> None:
        self.batch_h.observe(execution.rows)
