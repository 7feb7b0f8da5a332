"""Validate an OptimizeSpec and resolve it, with its source version, into a stored job spec.

`check` refuses what no registry lookup can fix (INVALID_ARGUMENT); `resolve`
then pins the source version (an alias moving later does not change what
the job optimizes) and the evaluation data set: the request's, or the one
the source version was trained on (its lineage, or for versions registered
before lineage, its training run's parameters), with that job's validation
split and seed so the validation rows are the parent job's. The result has
every JobSpec field (the training ones unused), so the job is stored,
listed, watched and cancelled as a training job is.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from maas.common.errors import AlreadyExists, FailedPrecondition
from maas.trainer import datasets, jobspec, spec
from maas.trainer.jobspec import DatasetRef, JobSpec, Optimization, OptimizeRequest, VersionRef

DEFAULT_SPLIT = 0.1


@dataclass(frozen=True)
class Source:
    """What the trainer needs to know of a source version before queueing its optimization."""

    model: str
    version: int
    ready: bool
    status: str
    archived: bool
    formats: frozenset[str]  # its artifacts: onnx, safetensors, ort, ...
    # The data set it was trained on: {name, path, args, validation_split, seed, fingerprint}, or None.
    dataset: dict[str, Any] | None = None
    dataset_from: str = ""  # lineage or run
    input_shape: tuple[int, ...] | None = None  # of one row (the signature's first input less its batch)

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"


def check(raw: dict[str, Any]) -> OptimizeRequest:
    """The request's options, typed; InvalidArgument naming the field (spec.*) for anything malformed."""
    return jobspec.parse_optimize(raw)


def can_export_pte() -> bool:
    """Whether this trainer's environment has ExecuTorch (maas-trainer[edge]), without importing it here."""
    return importlib.util.find_spec("executorch") is not None


def require_tools(checked: OptimizeRequest) -> None:
    """FailedPrecondition when this trainer cannot produce a format asked for (before any registry lookup)."""
    if "pte" in checked.formats and not can_export_pte():
        raise FailedPrecondition("this trainer cannot export ExecuTorch: install maas-trainer[edge]")


def resolve(checked: OptimizeRequest, source: Source, *, data_root: Path, max_runtime: int) -> JobSpec:
    """The stored job spec of an optimization of `source` (a result of `check`)."""
    if source.archived:
        raise FailedPrecondition(f"{source.ref} is archived; unarchive it to optimize it")
    if not source.ready:
        raise FailedPrecondition(f"{source.ref} is {source.status}, not READY")
    if not source.formats & {"onnx", "safetensors"}:
        raise FailedPrecondition(f"{source.ref} has neither an ONNX artifact nor safetensors weights to start from")
    if "ort" in checked.formats and not checked.quantize and "ort" in source.formats:
        raise AlreadyExists(f"{source.ref} already has an ORT artifact")
    if "pte" in checked.formats:
        if "pte" in source.formats:
            raise AlreadyExists(f"{source.ref} already has a PTE artifact")
        if "safetensors" not in source.formats:
            raise FailedPrecondition(
                f"{source.ref} has no safetensors weights: a .pte is exported from the torch module, "
                "which an ONNX-only version does not have"
            )
    lineage = source.dataset or {}
    asked = checked.dataset
    if asked is None and not lineage.get("name"):
        raise FailedPrecondition(f"version {source.ref} has no data set in its lineage; give --dataset")
    chosen = asked.model_dump() if asked is not None else lineage
    info = datasets.describe(
        str(chosen.get("name", "")), str(chosen.get("path", "")), dict(chosen.get("args") or {}), data_root
    )
    if source.input_shape is not None and tuple(info.input_shape) != source.input_shape:
        raise FailedPrecondition(
            f"data set {info.name} yields inputs of shape {list(info.input_shape)}, "
            f"{source.ref} takes {list(source.input_shape)}"
        )
    split = float(lineage.get("validation_split") or DEFAULT_SPLIT)
    seed = int(lineage.get("seed") or 0)
    same = asked is None or (info.name == lineage.get("name") and info.args == (lineage.get("args") or {}))
    optimize = Optimization(
        **checked.model_dump(),
        parent=VersionRef(model=source.model, version=source.version),
        dataset_from=source.dataset_from if asked is None else "request",
        dataset_fingerprint=str(lineage.get("fingerprint") or "") if same else "",
    )
    what = "int8" if checked.quantize else ", ".join(checked.formats)
    try:
        return JobSpec(
            dataset=DatasetRef(name=info.name, path=info.path, args=info.args),
            validation_split=split,
            seed=seed,
            max_runtime_seconds=max_runtime,
            register_as=(checked.register_as or source.model) if checked.quantize else "",
            promotion=checked.promotion,
            max_retries=1,
            description=f"{what} of {source.ref}",
            optimize=optimize,
        )
    except ValidationError as exc:  # the parent job's split or seed, out of range
        raise jobspec.invalid(exc) from None


def fingerprint(checked: OptimizeRequest) -> str:
    """The idempotency fingerprint: the request as given (not the pinned version an alias named)."""
    return spec.fingerprint({"optimize_request": checked.model_dump(mode="json")})


def dataset_from_run(params: dict[str, str]) -> dict[str, Any] | None:
    """A training run's data set, split and seed from its flattened parameters (handoff.flatten_params)."""
    name = params.get("dataset.name", "")
    if not name:
        return None
    args: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith("dataset.args."):
            try:
                args[key.removeprefix("dataset.args.")] = json.loads(value)
            except ValueError:
                args[key.removeprefix("dataset.args.")] = value
    try:
        return {
            "name": name,
            "path": params.get("dataset.path", ""),
            "args": args,
            "validation_split": float(params.get("validation_split") or DEFAULT_SPLIT),
            "seed": int(params.get("seed") or 0),
        }
    except ValueError:
        return None
