"""The registry side of an optimization job: fetch its source version, register what it derived.

Before the worker starts, the source version's ONNX artifact (or, if it has
none, its safetensors weights) and its architecture and signature are put in
job_dir/source; the worker never talks to the registry. After it, an int8
model becomes a new version (format ONNX, the parent's architecture and
signature so labels and normalization carry over, tags and lineage linking
it to its parent, the measured metrics), its ORT file is added while it is
PENDING and the ONNX model makes it READY; then the job's promotion rule
runs as a training job's does. Formats alone (ORT, ExecuTorch .pte) are added to the
source version itself, their check recorded as tags (a READY version's metrics are
fixed). Outages are waited out; a refusal fails the job and, for a new
version, leaves it FAILED with the reason.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from maas.common import errors
from maas.common.clients.registry import RegistryClient
from maas.common.structs import from_struct
from maas.trainer import entities
from maas.trainer.db.store import JobStore
from maas.trainer.handoff import Handoff, to_signature
from maas.trainer.jobspec import Optimization
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.trainer.derived")
Emit = Callable[[str], Awaitable[None]]


def signature_doc(signature: common_pb2.Signature) -> dict[str, Any]:
    """A Signature as handoff.to_signature reads it back."""

    def specs(items: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "datatype": common_pb2.DataType.Name(t.datatype).removeprefix("DATA_TYPE_"),
                "shape": list(t.shape),
            }
            for t in items
        ]

    return {"inputs": specs(signature.inputs), "outputs": specs(signature.outputs)}


def optimization(job: entities.Job) -> Optimization:
    """What an optimization job was asked to make (its spec's optimize section)."""
    if job.spec.optimize is None:
        raise errors.FailedPrecondition(f"job {job.job_id} is not an optimization")
    return job.spec.optimize


def to_lineage(job: entities.Job, result: dict[str, Any]) -> rpb.Lineage:
    opt, ds = optimization(job), result["dataset"]
    origins = result.get("origins") or {}
    args = struct_pb2.Struct()
    args.update(ds.get("args") or {})
    return rpb.Lineage(
        source="optimize",
        job_id=job.job_id,
        architecture_origin=str(origins.get("architecture") or ""),
        parent=rpb.VersionRef(model=result["source"]["model"], version=int(result["source"]["version"])),
        dataset=rpb.DatasetLineage(
            name=ds["name"],
            args=args,
            path=ds.get("path", ""),
            fingerprint=opt.dataset_fingerprint,
            validation_split=float(ds["validation_split"]),
            seed=int(ds["seed"]),
            origin=str(origins.get("dataset") or ""),
        ),
        method=f"quantize-int8-{result['quantized']['method']}",
        software=result["software"],
    )


class DerivedHandoff:
    def __init__(
        self, client: RegistryClient, handoff: Handoff, store: JobStore, *, in_thread: Callable[..., Awaitable[Any]]
    ) -> None:
        self._client = client
        self._handoff = handoff
        self._store = store
        self._in_thread = in_thread

    async def fetch(self, job: entities.Job, directory: Path) -> None:
        """The source version's model and description into `directory` (version.json written last)."""
        parent = optimization(job).parent
        model, number = parent.model, parent.version
        ref = f"{model}/{number}"
        patiently = self._handoff.patiently
        version = await patiently("source lookup", job.job_id, lambda: self._client.get_version(model, number))
        if version.status != rpb.VERSION_STATUS_READY or version.archived:
            raise errors.FailedPrecondition(f"{ref} is no longer READY")
        formats = {a.format for a in version.artifacts}
        if rpb.MODEL_FORMAT_ONNX in formats:
            fmt, name = rpb.MODEL_FORMAT_ONNX, "model.onnx"
        elif rpb.MODEL_FORMAT_SAFETENSORS in formats:
            fmt, name = rpb.MODEL_FORMAT_SAFETENSORS, "model.safetensors"
        else:
            raise errors.FailedPrecondition(f"{ref} has neither an ONNX artifact nor safetensors weights")
        wanted = [(fmt, name)]
        if "pte" in optimization(job).formats and fmt != rpb.MODEL_FORMAT_SAFETENSORS:
            # A .pte is exported from the torch module: its weights too, beside the ONNX model.
            if rpb.MODEL_FORMAT_SAFETENSORS not in formats:
                raise errors.FailedPrecondition(f"{ref} has no safetensors weights to export a .pte from")
            wanted.append((rpb.MODEL_FORMAT_SAFETENSORS, "model.safetensors"))
        directory.mkdir(parents=True, exist_ok=True)
        for wanted_fmt, wanted_name in wanted:
            await patiently(
                "source download",
                job.job_id,
                functools.partial(
                    self._client.download_artifact, model, number, directory / wanted_name, format=wanted_fmt
                ),
            )
        doc = {
            "model": model,
            "version": number,
            "architecture": from_struct(version.architecture, "architecture"),
            "signature": signature_doc(version.signature),
            "artifact": name,
        }
        tmp = directory / ".version.json.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(directory / "version.json")

    async def register(self, job: entities.Job, export_dir: Path, emit: Emit) -> entities.Job:
        result = json.loads((export_dir / "result.json").read_text())
        if optimization(job).quantize:
            return await self._register_version(job, export_dir, result, emit)
        return await self._add_formats(job, export_dir, result, emit)

    async def _register_version(
        self, job: entities.Job, export_dir: Path, result: dict[str, Any], emit: Emit
    ) -> entities.Job:
        h, spec = self._handoff, job.spec
        model, parent = spec.register_as, result["source"]
        parent_ref = f"{parent['model']}/{parent['version']}"
        metrics = {k: float(v) for k, v in result["metrics"].items()}
        if result.get("ort"):
            metrics["ort_max_abs_diff"] = float(result["ort"]["max_abs_diff"])
        await h.patiently("registry sync", job.job_id, lambda: h.sync_metrics(job.job_id))
        job = await self._in_thread(self._store.get, job.job_id)
        await h.patiently("model check", job.job_id, lambda: self._client.ensure_model(model))
        found = await h.patiently("version lookup", job.job_id, lambda: h._find_version(model, job))
        tags = {
            "job_id": job.job_id,
            "quantization": "int8",
            "quantization_method": result["quantized"]["method"],
            "parent": parent_ref,
            "dataset": result["dataset"]["name"],
        }
        version = found
        if version is None:
            version = await h.patiently(
                "version create",
                job.job_id,
                lambda: self._client.create_version(
                    model,
                    format=rpb.MODEL_FORMAT_ONNX,
                    architecture=result["architecture"],
                    signature=to_signature(result["signature"]),
                    run_id=job.run_id,
                    description=spec.description,
                    tags=tags,
                    metrics=metrics,
                    lineage=to_lineage(job, result),
                ),
            )
        number = int(version.version)
        job = await self._in_thread(self._store.record, job.job_id, registered_model=model, registered_version=number)
        try:
            if version.status != rpb.VERSION_STATUS_READY and result.get("ort"):
                await h.patiently(
                    "ORT upload", job.job_id, lambda: self._add_ort(model, number, export_dir / result["ort"]["file"])
                )
            if version.status != rpb.VERSION_STATUS_READY:
                version = await h.patiently(
                    "upload", job.job_id, lambda: h._upload(model, number, export_dir / "model.onnx")
                )
        except errors.MaasError as exc:
            await self._fail(job, model, number, f"upload refused: {exc.message}")
            raise
        await emit(
            f"registered {model}/{number} (int8 of {parent_ref}, {version.size_bytes} bytes, "
            f"accuracy delta {metrics['accuracy_delta']:+.4f}, size ratio {metrics['size_ratio']:.3f}, "
            f"latency ratio {metrics['latency_ratio']:.3f})"
        )
        promoted = ""
        if spec.promotion is not None:
            promoted = await h._promote(job, model, number, metrics, spec.promotion, emit)
        await h.patiently("run finish", job.job_id, lambda: h.finish_run(job.job_id, rpb.RUN_STATUS_FINISHED))
        return await self._in_thread(self._store.record, job.job_id, promoted_alias=promoted)

    async def _add_formats(
        self, job: entities.Job, export_dir: Path, result: dict[str, Any], emit: Emit
    ) -> entities.Job:
        h, source = self._handoff, result["source"]
        model, number = source["model"], int(source["version"])
        for key, fmt in (("ort", rpb.MODEL_FORMAT_ORT), ("pte", rpb.MODEL_FORMAT_PTE)):
            edge = result.get(key)
            if not edge:
                continue
            path = export_dir / edge["file"]
            await h.patiently(
                f"{key.upper()} upload", job.job_id, functools.partial(self._add_edge, model, number, path, fmt)
            )
            tags = {f"{key}_max_abs_diff": f"{edge['max_abs_diff']:.6g}", f"{key}_job_id": job.job_id}
            await h.patiently("tags", job.job_id, functools.partial(self._client.set_version_tags, model, number, tags))
            article = "an" if key == "ort" else "a"
            await emit(f"added {article} {key.upper()} artifact to {model}/{number} ({edge['size_bytes']} bytes)")
        await h.patiently("registry sync", job.job_id, lambda: h.sync_metrics(job.job_id))
        await h.patiently("run finish", job.job_id, lambda: h.finish_run(job.job_id, rpb.RUN_STATUS_FINISHED))
        return await self._in_thread(self._store.record, job.job_id, registered_model=model, registered_version=number)

    async def _add_ort(self, model: str, number: int, path: Path) -> None:
        await self._add_edge(model, number, path, rpb.MODEL_FORMAT_ORT)

    async def _add_edge(self, model: str, number: int, path: Path, fmt: int) -> None:
        try:
            await self._client.upload_artifact(model, number, path, format=fmt)
        except errors.AlreadyExists:
            pass  # an earlier attempt's upload landed but its answer was lost

    async def _fail(self, job: entities.Job, model: str, number: int, reason: str) -> None:
        try:
            await self._client.fail_version(model, number, reason[:1000])
        except errors.MaasError as exc:
            log.warning("job %s: could not fail %s/%d: %s", job.job_id, model, number, exc)
