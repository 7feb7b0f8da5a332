"""Everything the trainer tells the registry about a job.

A run is created with the job's params; step and epoch metrics go to it in
batches read back from the job's persisted event log (a cursor in the job row
says what was sent, so a restart neither loses nor resends a batch it
recorded). At the end the exported weights become a version, its bytes are
uploaded (the checked ONNX export first, while the version is PENDING, a text
model's tokenizer.json as its TOKENIZER artifact, then the safetensors weights
that make it READY, so whoever loads on
VERSION_READY finds both) and it records its lineage (the job, its data set and
split, the worker's software versions), and the promotion rule may move an alias. Registry outages are
waited out with capped exponential backoff; only a refusal that a retry
cannot fix fails the job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import struct_pb2

from maas.common import errors
from maas.common.clients.registry import RegistryClient
from maas.common.retry import RetryPolicy
from maas.trainer import entities
from maas.trainer.db.store import JobStore
from maas.trainer.jobspec import Promotion
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.trainer.handoff")
T = TypeVar("T")
TRANSIENT = (errors.Unavailable, errors.DeadlineExceeded, errors.Internal, errors.Aborted)
# No attempt limit: a finished job waits out a registry outage, however long.
PATIENT = RetryPolicy(attempts=None, initial_backoff=0.5, max_backoff=30.0)
EVENT_PAGE = 1000


def flatten_params(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if key in ("architecture", "tags", "description"):
            continue
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        elif value is not None:
            out[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


def series_from_events(events: list[entities.JobEvent]) -> list[rpb.MetricSeries]:
    columns: dict[str, tuple[list[int], list[float], list[int]]] = {}

    def add(key: str, step: int, value: float, ts: int) -> None:
        steps, values, stamps = columns.setdefault(key, ([], [], []))
        steps.append(step)
        values.append(value)
        stamps.append(ts)

    for event in events:
        if event.kind == "step":
            add("loss", int(event.data["global_step"]), float(event.data["loss"]), event.time_ms)
            add(
                "samples_per_second",
                int(event.data["global_step"]),
                float(event.data["samples_per_second"]),
                event.time_ms,
            )
        elif event.kind == "epoch":
            for key, value in event.data["metrics"].items():
                add(key, int(event.data["epoch"]), float(value), event.time_ms)
    return [rpb.MetricSeries(key=k, steps=s, values=v, timestamps_ms=t) for k, (s, v, t) in columns.items()]


def to_signature(doc: dict[str, Any]) -> common_pb2.Signature:
    def specs(items: list[dict[str, Any]]) -> list[common_pb2.TensorSpec]:
        return [
            common_pb2.TensorSpec(
                name=i["name"],
                datatype=common_pb2.DataType.Value(f"DATA_TYPE_{i['datatype']}"),  # type: ignore[arg-type]
                shape=i["shape"],
            )
            for i in items
        ]

    return common_pb2.Signature(inputs=specs(doc["inputs"]), outputs=specs(doc["outputs"]))


def training_lineage(job: entities.Job, result: dict[str, Any]) -> rpb.Lineage:
    """Where a trained version came from: the job, its resolved data set and split, what the worker ran.

    name, args, path, validation_split and seed are the stored job spec's own
    values, so an optimization of the version rebuilds exactly its validation
    rows; the fingerprint and software versions are what the worker reported.
    """
    spec = job.spec
    ds = spec.dataset
    args = struct_pb2.Struct()
    args.update(ds.args)
    origins = result.get("origins") or {}
    pretrained = result.get("pretrained") or {}
    return rpb.Lineage(
        source="trainer",
        job_id=job.job_id,
        architecture_origin=str(origins.get("architecture") or ""),
        dataset=rpb.DatasetLineage(
            name=ds.name,
            args=args,
            path=ds.path,
            fingerprint=str(result.get("dataset_fingerprint") or ""),
            validation_split=spec.validation_split,
            seed=spec.seed,
            origin=str(origins.get("dataset") or ""),
        ),
        software={str(k): str(v) for k, v in (result.get("software") or {}).items()},
        pretrained=rpb.PretrainedLineage(path=pretrained["path"], sha256=pretrained["sha256"]) if pretrained else None,
    )


def _transient(exc: Exception) -> bool:
    return isinstance(exc, TRANSIENT)


class Handoff:
    def __init__(self, client: RegistryClient, store: JobStore, *, in_thread: Callable[..., Awaitable[Any]]) -> None:
        self._client = client
        self._store = store
        self._in_thread = in_thread

    async def patiently(self, what: str, job_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """Retry `call` through registry outages until it succeeds or is refused."""

        def warn(exc: Exception, _attempt: int, pause: float) -> None:
            log.warning("job %s: %s failed (%s), retrying in %.1fs", job_id, what, exc, pause)

        return await PATIENT.run(call, retryable=_transient, on_retry=warn)

    # ------------------------------------------------------------- metrics

    async def ensure_run(self, job: entities.Job) -> str:
        if job.run_id:
            return job.run_id
        run = await self._client.create_run(
            name=f"job {job.job_id}", job_id=job.job_id, params=flatten_params(job.spec.stored())
        )
        await self._in_thread(self._store.mark_synced, job.job_id, job.synced_seq, run.run_id)
        return run.run_id

    async def sync_metrics(self, job_id: str) -> None:
        """Send the metrics of every event recorded since the last sync."""
        job = await self._in_thread(self._store.get, job_id)
        run_id = await self.ensure_run(job)
        cursor = job.synced_seq
        while True:
            batch, _ = await self._in_thread(self._store.events, job_id, cursor, EVENT_PAGE)
            if not batch:
                return
            series = series_from_events(batch)
            if series:
                await self._client.log_metrics(run_id, series)
            cursor = batch[-1].seq
            await self._in_thread(self._store.mark_synced, job_id, cursor, None)
            if len(batch) < EVENT_PAGE:
                return

    async def finish_run(self, job_id: str, status: int) -> None:
        job = await self._in_thread(self._store.get, job_id)
        if job.run_id:
            try:
                await self._client.finish_run(job.run_id, status)
            except errors.FailedPrecondition:
                pass  # already ended

    # ------------------------------------------------------------ register

    async def register(
        self, job: entities.Job, export_dir: Path, emit: Callable[[str], Awaitable[None]]
    ) -> entities.Job:
        spec = job.spec
        model = spec.register_as
        result = json.loads((export_dir / "result.json").read_text())
        metrics = {k: float(v) for k, v in result["metrics"].items()}
        onnx = result.get("onnx") or {}
        onnx_tags: dict[str, str] = {}
        if onnx:
            if onnx.get("max_abs_diff") is not None:
                metrics["onnx_max_abs_diff"] = float(onnx["max_abs_diff"])
            onnx_tags["onnx_export"] = "ok" if onnx.get("ok") else str(onnx.get("reason", "failed"))[:1000]
        await self.patiently("registry sync", job.job_id, lambda: self.sync_metrics(job.job_id))
        job = await self._in_thread(self._store.get, job.job_id)
        await self.patiently("model check", job.job_id, lambda: self._client.ensure_model(model))

        found = await self.patiently("version lookup", job.job_id, lambda: self._find_version(model, job))
        if found is not None:
            version = found
        else:
            version = await self.patiently(
                "version create",
                job.job_id,
                lambda: self._client.create_version(
                    model,
                    format=rpb.MODEL_FORMAT_SAFETENSORS,
                    architecture=result["architecture"],
                    signature=to_signature(result["signature"]),
                    run_id=job.run_id,
                    description=spec.description,
                    tags={
                        **spec.tags,
                        **onnx_tags,
                        "job_id": job.job_id,
                        "dataset": spec.dataset.name,
                    },
                    metrics=metrics,
                    lineage=training_lineage(job, result),
                ),
            )
        job = await self._in_thread(
            self._store.record, job.job_id, registered_model=model, registered_version=version.version
        )
        graph = export_dir / "model.onnx"
        if version.status != rpb.VERSION_STATUS_READY and graph.exists():
            await self.patiently(
                "ONNX upload", job.job_id, lambda: self._upload_onnx(job, model, version.version, graph, emit)
            )
        tokenizer = export_dir / "tokenizer.json"
        if version.status != rpb.VERSION_STATUS_READY and tokenizer.exists():
            await self.patiently(
                "tokenizer upload", job.job_id, lambda: self._upload_tokenizer(model, version.version, tokenizer)
            )
        if version.status != rpb.VERSION_STATUS_READY:
            weights = export_dir / "model.safetensors"
            version = await self.patiently("upload", job.job_id, lambda: self._upload(model, version.version, weights))
        await emit(f"registered {model}/{version.version} ({version.size_bytes} bytes, sha256 {version.sha256[:12]})")

        promoted = ""
        if spec.promotion is not None:
            promoted = await self._promote(job, model, version.version, metrics, spec.promotion, emit)
        await self.patiently("run finish", job.job_id, lambda: self.finish_run(job.job_id, rpb.RUN_STATUS_FINISHED))
        return await self._in_thread(self._store.record, job.job_id, promoted_alias=promoted)

    async def _find_version(self, model: str, job: entities.Job) -> rpb.ModelVersion | None:
        """The version an earlier attempt of this hand-off created, if any."""
        if job.registered_version:
            return await self._client.get_version(model, job.registered_version)
        found = await self._client.list_versions(
            rpb.ListVersionsRequest(model=model, tags=[common_pb2.TagFilter(key="job_id", value=job.job_id)])
        )
        return found.versions[0] if found.versions else None

    async def _upload_onnx(
        self, job: entities.Job, model: str, number: int, graph: Path, emit: Callable[[str], Awaitable[None]]
    ) -> None:
        """The ONNX artifact beside the weights; refused, it is left out (the version is served from safetensors)."""
        try:
            await self._client.upload_artifact(model, number, graph, format=rpb.MODEL_FORMAT_ONNX)
        except errors.AlreadyExists:
            pass  # an earlier attempt's upload landed but its answer was lost
        except (errors.InvalidArgument, errors.FailedPrecondition, errors.ResourceExhausted) as exc:
            log.warning("job %s: the registry refused the ONNX artifact of %s/%d: %s", job.job_id, model, number, exc)
            await emit(f"ONNX artifact refused by the registry ({exc}); the version is served from safetensors")

    async def _upload_tokenizer(self, model: str, number: int, tokenizer: Path) -> None:
        """A text model's tokenizer.json (TOKENIZER), before the weights make the version READY."""
        try:
            await self._client.upload_artifact(model, number, tokenizer, format=rpb.MODEL_FORMAT_TOKENIZER)
        except errors.AlreadyExists:
            pass  # an earlier attempt's upload landed but its answer was lost

    async def _upload(self, model: str, number: int, weights: Path) -> rpb.ModelVersion:
        try:
            return await self._client.upload_artifact(model, number, weights)
        except errors.FailedPrecondition:
            # An earlier attempt's upload landed but its answer was lost.
            current = await self._client.get_version(model, number)
            if current.status == rpb.VERSION_STATUS_READY:
                return current
            raise

    async def _promote(
        self,
        job: entities.Job,
        model: str,
        number: int,
        metrics: dict[str, float],
        rule: Promotion,
        emit: Callable[[str], Awaitable[None]],
    ) -> str:
        alias, metric, higher = rule.alias, rule.metric, rule.higher_is_better
        value = metrics.get(metric)
        if value is None:
            await emit(f"not promoted: the job reported no {metric}")
            return ""
        if (higher and value < rule.threshold) or (not higher and value > rule.threshold):
            await emit(f"not promoted: {metric} {value:.4f} does not pass {rule.threshold}")
            return ""

        async def current() -> rpb.ModelVersion | None:
            try:
                return await self._client.resolve(f"{model}@{alias}")
            except errors.NotFound:
                return None

        holder = await self.patiently("alias lookup", job.job_id, current)
        if holder is not None and holder.version != number and metric in holder.metrics:
            held = holder.metrics[metric]
            if (higher and value < held) or (not higher and value > held):
                await emit(f"not promoted: {metric} {value:.4f} is worse than {model}/{holder.version}'s {held:.4f}")
                return ""
        await self.patiently("alias move", job.job_id, lambda: self._client.set_alias(model, alias, number))
        await emit(f"promoted {model}/{number} to {alias} ({metric} {value:.4f})")
        return str(alias)
