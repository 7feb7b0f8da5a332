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

from maas.common import names
from maas.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from maas.trainer import datasets, spec

QUANTIZE = ("int8",)
METHODS = ("dynamic", "static")
FORMATS = ("ort", "pte")
METRICS = ("val_accuracy", "accuracy_delta", "size_ratio", "latency_ratio")
LOWER_IS_BETTER = ("size_ratio", "latency_ratio")
DEFAULT_CALIBRATION_BATCHES = 8
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


def check(raw: dict[str, Any]) -> dict[str, Any]:
    """The request's options, normalized; InvalidArgument for anything malformed."""
    spec._finite(raw, "spec")
    source = str(raw.get("source") or "")
    if not source:
        raise InvalidArgument("spec.source: name the version to optimize (name/3, name@alias or name)")
    names.parse_ref(source, "spec.source")
    quantize = str(raw.get("quantize") or "")
    if quantize and quantize not in QUANTIZE:
        raise InvalidArgument(f"spec.quantize: unknown quantization '{quantize[:40]}' (int8, or empty for none)")
    method = str(raw.get("method") or "")
    if method and method not in METHODS:
        raise InvalidArgument(f"spec.method: unknown method '{method[:40]}' (dynamic, static, or empty for auto)")
    if method and not quantize:
        raise InvalidArgument("spec.method: only with quantize")
    formats: list[str] = []
    for i, fmt in enumerate(raw.get("formats") or []):
        fmt = str(fmt).lower()
        if fmt not in FORMATS:
            raise InvalidArgument(f"spec.formats[{i}]: unknown format '{fmt[:40]}' ({', '.join(FORMATS)})")
        if fmt not in formats:
            formats.append(fmt)
    if not quantize and not formats:
        raise InvalidArgument("spec: nothing to do: ask for quantize int8 and/or formats (ort, pte)")
    if quantize and "pte" in formats:
        # The .pte is exported from the torch module; an int8 ONNX model has none to export.
        raise InvalidArgument(
            "spec.formats: pte is exported from the float torch weights; ask for it without --quantize"
        )
    register_as = str(raw.get("register_as") or "")
    if register_as:
        if not quantize:
            raise InvalidArgument("spec.register_as: only with quantize (formats alone add artifacts to the source)")
        names.model_name(register_as, "spec.register_as")
    promo = raw.get("promotion") or {}
    if promo.get("alias") and not quantize:
        raise InvalidArgument("spec.promotion: only with quantize (a new version)")
    promotion = spec.promotion_rule(promo, "spec.promotion", METRICS, lambda metric: metric not in LOWER_IS_BETTER)
    batches = spec._int(
        int(raw.get("calibration_batches") or DEFAULT_CALIBRATION_BATCHES), "spec.calibration_batches", 1, 1000
    )
    dataset = raw.get("dataset") or {}
    return {
        "source": source,
        "quantize": quantize,
        "method": method,
        "formats": formats,
        "dataset": dict(dataset) if dataset.get("name") else None,
        "register_as": register_as,
        "promotion": promotion,
        "calibration_batches": batches,
    }


def can_export_pte() -> bool:
    """Whether this trainer's environment has ExecuTorch (maas-trainer[edge]), without importing it here."""
    return importlib.util.find_spec("executorch") is not None


def require_tools(checked: dict[str, Any]) -> None:
    """FailedPrecondition when this trainer cannot produce a format asked for (before any registry lookup)."""
    if "pte" in checked["formats"] and not can_export_pte():
        raise FailedPrecondition("this trainer cannot export ExecuTorch: install maas-trainer[edge]")


def resolve(checked: dict[str, Any], source: Source, *, data_root: Path, max_runtime: int) -> dict[str, Any]:
    """The stored job spec of an optimization of `source` (a result of `check`)."""
    if source.archived:
        raise FailedPrecondition(f"{source.ref} is archived; unarchive it to optimize it")
    if not source.ready:
        raise FailedPrecondition(f"{source.ref} is {source.status}, not READY")
    if not source.formats & {"onnx", "safetensors"}:
        raise FailedPrecondition(f"{source.ref} has neither an ONNX artifact nor safetensors weights to start from")
    if "ort" in checked["formats"] and not checked["quantize"] and "ort" in source.formats:
        raise AlreadyExists(f"{source.ref} already has an ORT artifact")
    if "pte" in checked["formats"]:
        if "pte" in source.formats:
            raise AlreadyExists(f"{source.ref} already has a PTE artifact")
        if "safetensors" not in source.formats:
            raise FailedPrecondition(
                f"{source.ref} has no safetensors weights: a .pte is exported from the torch module, "
                "which an ONNX-only version does not have"
            )
    lineage = source.dataset or {}
    asked = checked["dataset"]
    if asked is None and not lineage.get("name"):
        raise FailedPrecondition(f"version {source.ref} has no data set in its lineage; give --dataset")
    chosen = asked if asked is not None else lineage
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
    optimize = {
        **checked,
        "parent": {"model": source.model, "version": source.version},
        "dataset_from": source.dataset_from if asked is None else "request",
        "dataset_fingerprint": str(lineage.get("fingerprint") or "") if same else "",
    }
    return {
        "model": {"name": "", "args": {}},
        "dataset": {"name": info.name, "path": info.path, "args": info.args},
        "optimizer": {"name": "", "lr": 0.0, "momentum": 0.0, "weight_decay": 0.0},
        "schedule": {"name": "", "step_size": 0, "gamma": 0.0},
        "epochs": 0,
        "batch_size": 0,
        "validation_split": spec._num(split, "validation_split", 0.01, 0.5),
        "seed": spec._int(seed, "seed", 0, 2**31 - 1),
        "world_size": 1,
        "max_runtime_seconds": max_runtime,
        "early_stopping": None,
        "register_as": (checked["register_as"] or source.model) if checked["quantize"] else "",
        "promotion": checked["promotion"],
        "max_retries": 1,
        "threads": 0,
        "description": f"{'int8' if checked['quantize'] else ', '.join(checked['formats'])} of {source.ref}",
        "tags": {},
        "optimize": optimize,
    }


def fingerprint(checked: dict[str, Any]) -> str:
    """The idempotency fingerprint: the request as given (not the pinned version an alias named)."""
    return spec.fingerprint({"optimize_request": checked})


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
