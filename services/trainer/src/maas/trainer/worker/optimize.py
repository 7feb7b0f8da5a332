"""An optimization job in the worker: int8 quantization and edge formats (ORT, ExecuTorch .pte), measured.

The trainer has put the source version in job_dir/source (version.json with its
architecture and signature, and its ONNX artifact, or its safetensors weights
when it has none: then the served module is rebuilt from the catalog and
exported with onnx_export, checked as a trained version's export is). The
evaluation data is the trainer's own data set and split, so the validation
rows are exactly the parent job's. What it writes to job_dir/export
(model.onnx: the int8 model, model.ort, result.json) the trainer's hand-off
registers; any refusal here is fatal (a retry computes the same), and
nothing is registered.

Metrics of the new version (quantize): val_accuracy of the int8 model on the
validation split, parent_val_accuracy (the parent ONNX on the same rows),
accuracy_delta (int8 minus parent, in accuracy units), size_ratio (int8 file
bytes / parent ONNX bytes), latency_ratio (int8 / parent: each model in its
own onnxruntime CPU session with the same intra-op threads, LATENCY_ROWS
validation rows per run, the median over LATENCY_ROUNDS rounds of the mean run
time, after warm-up). ort_max_abs_diff: the largest |ORT file - ONNX model|
output difference on the validation batch. pte_max_abs_diff: the largest
|.pte - torch module| difference there (pte_export; the module is rebuilt from
the safetensors weights, which the trainer fetches beside the ONNX model when
pte is asked for). A .pte over the tolerance is dropped with the reason in the
log, and fails the job when it was all that was asked.
"""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maas.common import catalog, plugins
from maas.common.errors import FailedPrecondition, MaasError
from maas.trainer import datasets
from maas.trainer.jobspec import JobSpec
from maas.trainer.worker import onnx_export, pte_export, quantize
from maas.trainer.worker.reporter import Reporter

CALIBRATION_ROWS = 32  # rows per calibration batch
LATENCY_ROWS = 32
LATENCY_ROUNDS = 7
CHECK_ROWS = onnx_export.MAX_CHECK_ROWS
SOFTWARE = {
    "maas": "maas-trainer",
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "numpy": "numpy",
    "executorch": "executorch",
}


def software() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for key, dist in SOFTWARE.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def run(job_dir: Path, spec: JobSpec, runtime: dict[str, Any], reporter: Reporter) -> int:
    """0 with job_dir/export written; a MaasError (fatal: the same inputs fail the same way) otherwise."""
    try:
        return _run(job_dir, spec, runtime, reporter)
    except MaasError:
        raise
    except Exception as exc:  # a quantizer or runtime refusal is the job's reason
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise FailedPrecondition(f"optimization failed: {type(exc).__name__}: {first}") from exc


def _run(job_dir: Path, spec: JobSpec, runtime: dict[str, Any], reporter: Reporter) -> int:
    opt = spec.optimize
    assert opt is not None
    threads = max(1, int(runtime.get("threads") or 1))
    torch.set_num_threads(threads)
    source_dir, export = job_dir / "source", job_dir / "export"
    export.mkdir(parents=True, exist_ok=True)
    version = json.loads((source_dir / "version.json").read_text())
    ref = f"{version['model']}/{version['version']}"
    reporter.emit("started", pid=os.getpid(), world_size=1, restart=0, resumed=False)

    ds = spec.dataset
    data_root = Path(runtime["data_root"])
    info = datasets.describe(ds.name, ds.path, dict(ds.args), data_root)
    want = [int(d) for d in version["signature"]["inputs"][0]["shape"][1:]]
    if list(info.input_shape) != want:
        raise FailedPrecondition(
            f"data set {info.name} yields inputs of shape {list(info.input_shape)}, {ref} takes {want}"
        )
    seed = spec.seed
    loaded = datasets.load(
        info,
        data_root,
        allow_download=bool(runtime.get("allow_download")),
        seed=seed,
        verify=bool(runtime.get("verify_datasets", True)),
    )
    train_idx, val_idx = datasets.split(len(loaded.x), spec.validation_split, seed)
    x_val = loaded.x[val_idx].to(torch.float32).numpy()
    y_val = loaded.y[val_idx].numpy()
    reporter.log(
        f"optimizing {ref}: {info.name}, {len(val_idx)} validation rows (split {spec.validation_split}, "
        f"seed {seed}), {threads} thread(s)"
    )

    parent = _parent_onnx(source_dir, version, x_val, job_dir / "work", float(runtime["onnx_tolerance"]), reporter)
    parent_session = quantize.session(parent, threads)
    parent_logits = quantize.outputs(parent_session, x_val)
    parent_acc = quantize.accuracy(parent_logits, y_val)
    result: dict[str, Any] = {
        "source": {"model": version["model"], "version": int(version["version"])},
        "architecture": version["architecture"],
        "signature": version["signature"],
        "dataset": {**ds.model_dump(mode="json"), "validation_split": spec.validation_split, "seed": seed},
        "origins": {"dataset": info.origin, "architecture": _architecture_origin(version["architecture"])},
        "software": software(),
        "metrics": {},
        "quantized": None,
        "ort": None,
        "pte": None,
    }
    target = parent
    if opt.quantize == "int8":
        target = export / "model.onnx"
        calibration = _calibration(loaded.x, train_idx, seed, opt.calibration_batches)
        done = quantize.quantize_onnx(parent, target, opt.method, calibration)
        reporter.log(
            f"quantized {ref} to int8 ({done.method}{', per channel' if done.per_channel else ''}"
            f"{f', calibrated on {done.calibration_batches} batches' if done.calibration_batches else ''}"
            f"{'' if done.preprocessed else ', without pre-processing (it failed)'}): "
            f"{parent.stat().st_size} -> {done.size_bytes} bytes"
        )
        int8_session = quantize.session(target, threads)
        acc = quantize.accuracy(quantize.outputs(int8_session, x_val), y_val)
        rows = np.resize(x_val, (LATENCY_ROWS, *x_val.shape[1:])).astype(np.float32)
        repeats = quantize.repeats_for(parent_session, rows)
        base = quantize.latency(parent_session, rows, rounds=LATENCY_ROUNDS, repeats=repeats)
        fast = quantize.latency(int8_session, rows, rounds=LATENCY_ROUNDS, repeats=repeats)
        result["metrics"] = {
            "val_accuracy": acc,
            "parent_val_accuracy": parent_acc,
            "accuracy_delta": acc - parent_acc,
            "size_ratio": done.size_bytes / parent.stat().st_size,
            "latency_ratio": fast / base,
        }
        result["quantized"] = {
            "method": done.method,
            "per_channel": done.per_channel,
            "preprocessed": done.preprocessed,
            "calibration_batches": done.calibration_batches,
            "latency": {"rows": LATENCY_ROWS, "threads": threads, "rounds": LATENCY_ROUNDS, "repeats": repeats},
        }
        reporter.log(
            f"int8 val_accuracy {acc:.4f} (parent {parent_acc:.4f}, delta {acc - parent_acc:+.4f}), "
            f"size ratio {done.size_bytes / parent.stat().st_size:.3f}, latency ratio {fast / base:.3f} "
            f"({fast * 1e3:.3f} ms vs {base * 1e3:.3f} ms per {LATENCY_ROWS} rows)"
        )
    if "ort" in opt.formats:
        result["ort"] = _ort(target, export / "model.ort", x_val, threads, float(runtime["onnx_tolerance"]), ref)
        ort = result["ort"]
        reporter.log(f"ORT format: {ort['size_bytes']} bytes, max |ort - onnx| {ort['max_abs_diff']:.3g}")
    if "pte" in opt.formats:
        module = _module(source_dir, version)
        pte = pte_export.export(module, x_val, export, float(runtime["onnx_tolerance"]))
        if pte.ok:
            result["pte"] = {
                "file": pte_export.FILE,
                "size_bytes": pte.size_bytes,
                "max_abs_diff": pte.max_abs_diff,
                "checked_rows": pte.checked_rows,
                "max_batch": pte_export.MAX_BATCH,
            }
            reporter.log(
                f"ExecuTorch format: {pte.size_bytes} bytes, max |pte - torch| {pte.max_abs_diff:.3g} "
                f"on {pte.checked_rows} rows, batch 1..{pte_export.MAX_BATCH}"
            )
        elif opt.formats == ("pte",):
            raise FailedPrecondition(f"{ref}: {pte.reason}")
        else:
            reporter.log(f"ExecuTorch format dropped: {pte.reason}")
    (export / "result.json").write_text(json.dumps(result))
    reporter.emit("exported", metrics=result["metrics"], epochs_run=0, stopped_early=False)
    return 0


def _architecture_origin(doc: dict[str, Any]) -> str:
    """Where the parent's catalog architecture comes from, if it names one installed here ("" otherwise)."""
    name = doc.get("name")
    found = plugins.installed().get("architecture", name) if isinstance(name, str) else None
    return found.origin.label if found is not None else ""


def _parent_onnx(
    source_dir: Path, version: dict[str, Any], x_val: np.ndarray, work: Path, tolerance: float, reporter: Reporter
) -> Path:
    """The parent's ONNX model: its artifact, or an export of its safetensors weights."""
    graph = source_dir / "model.onnx"
    if graph.exists():
        return graph
    arch = catalog.parse(version["architecture"])
    module = _module(source_dir, version)
    work.mkdir(parents=True, exist_ok=True)
    exported = onnx_export.export(module, arch, torch.from_numpy(x_val), work, tolerance)
    if not exported.ok:
        raise FailedPrecondition(f"{version['model']}/{version['version']} has no ONNX artifact and {exported.reason}")
    reporter.log(f"exported the safetensors weights to ONNX (max |onnxruntime - torch| {exported.max_abs_diff:.3g})")
    return work / onnx_export.FILE


def _module(source_dir: Path, version: dict[str, Any]) -> catalog.Normalized:
    """The served torch module (normalization inside, as the ONNX export has it) from the safetensors weights."""
    from safetensors.torch import load_file

    weights = source_dir / "model.safetensors"
    if not weights.exists():
        raise FailedPrecondition(f"{version['model']}/{version['version']} has no safetensors weights here")
    arch = catalog.parse(version["architecture"])
    module = catalog.build(arch)
    catalog.load_weights(module, arch, load_file(str(weights)))
    return module.eval()


def _calibration(x: torch.Tensor, train_idx: torch.Tensor, seed: int, batches: int) -> list[np.ndarray]:
    """`batches` batches of training rows, drawn by the seed (never validation rows)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7)
    order = train_idx[torch.randperm(len(train_idx), generator=g)][: batches * CALIBRATION_ROWS]
    rows = x[order].to(torch.float32).numpy()
    return [rows[i : i + CALIBRATION_ROWS] for i in range(0, len(rows), CALIBRATION_ROWS)]


def _ort(onnx_path: Path, dst: Path, x_val: np.ndarray, threads: int, tolerance: float, ref: str) -> dict[str, Any]:
    """Convert to ORT format and check it against the ONNX model it came from on the validation batch."""
    quantize.to_ort(onnx_path, dst)
    rows = x_val[:CHECK_ROWS]
    expected = quantize.outputs(quantize.session(onnx_path, threads), rows)
    got = quantize.outputs(quantize.session(dst, threads), rows)
    if got.shape != expected.shape:
        raise FailedPrecondition(f"the ORT model of {ref} answers shape {list(got.shape)}, ONNX {list(expected.shape)}")
    diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if expected.size else 0.0
    if not math.isfinite(diff) or diff > tolerance:
        raise FailedPrecondition(
            f"the ORT model of {ref} differs from its ONNX model by up to {diff:.3g} on {len(rows)} validation rows, "
            f"over the tolerance {tolerance:g}"
        )
    return {"file": dst.name, "size_bytes": dst.stat().st_size, "max_abs_diff": diff, "checked_rows": len(rows)}
