"""The ONNX artifact of a trained version, checked against the torch module it came from.

The module (normalization included, as served) is exported with torch.onnx's
TorchScript-based exporter (`dynamo=False`: it runs offline and needs no
onnxscript, and it exports every catalog architecture) with a dynamic batch
dimension and the version's tensor names, then run with onnxruntime on the
job's validation batch. The largest absolute difference between the two
outputs is the check: over the tolerance, the export fails with that reason
and no model.onnx is written; the version is still registered and served
from its safetensors weights. Nothing here ever fails the job.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maas.common import catalog

FILE = "model.onnx"
OPSET = 17
# onnxruntime's kernels sum in another order than torch's: on the catalog's networks the
# logits differ by 1e-7 (mlp, lenet) to 3e-5 (resnet34/50, random weights). 1e-3 absolute
# leaves a deep trained network that room while any real mismatch (a wrong layer,
# normalization or layout) is off by far more.
DEFAULT_TOLERANCE = 1e-3
MAX_CHECK_ROWS = 256


@dataclass(frozen=True)
class OnnxResult:
    ok: bool
    tolerance: float
    max_abs_diff: float | None = None
    reason: str = ""
    checked_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export(
    model: catalog.Normalized, arch: catalog.Architecture, batch: torch.Tensor, directory: Path, tolerance: float
) -> OnnxResult:
    """Write directory/model.onnx when the export computes what `model` does on `batch` within `tolerance`."""
    rows = batch[:MAX_CHECK_ROWS].detach().to("cpu", torch.float32)

    def write_and_compare(tmp: Path) -> float:
        module = copy.deepcopy(model).to("cpu").eval()
        signature = arch.signature()
        input_name, output_name = signature["inputs"][0]["name"], signature["outputs"][0]["name"]
        _export(module, rows[:2], tmp, input_name, output_name)
        return _max_abs_diff(module, tmp, rows, input_name)

    return checked(directory, tolerance, len(rows), "validation rows", write_and_compare)


def checked(
    directory: Path, tolerance: float, rows: int, what: str, write_and_compare: Callable[[Path], float]
) -> OnnxResult:
    """Keep the model `write_and_compare` writes to a temporary file when its largest difference is within tolerance.

    `write_and_compare(tmp)` exports to `tmp` and returns the largest absolute
    difference between onnxruntime's and torch's outputs on `rows` `what`
    ("validation rows"); any failure or a difference over the tolerance leaves
    no file and says why, else the file is made durable as directory/model.onnx.
    """
    tmp = directory / f".{FILE}.tmp"
    try:
        diff = write_and_compare(tmp)
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure is the export's, not the job's
        tmp.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return OnnxResult(False, tolerance, reason=f"ONNX export failed: {type(exc).__name__}: {first}")
    if not math.isfinite(diff) or diff > tolerance:
        tmp.unlink(missing_ok=True)
        return OnnxResult(
            False,
            tolerance,
            diff if math.isfinite(diff) else None,
            f"ONNX export refused: onnxruntime's outputs differ from torch's by up to {diff:.3g} "
            f"on {rows} {what}, over the tolerance {tolerance:g}",
            rows,
        )
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, directory / FILE)
    return OnnxResult(True, tolerance, diff, "", rows)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            do_constant_folding=True,
        )


def _max_abs_diff(module: nn.Module, path: Path, rows: torch.Tensor, input_name: str) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = module(rows).numpy()
    (got,) = session.run(None, {input_name: rows.numpy()})
    if got.shape != expected.shape:
        raise ValueError(f"onnxruntime's output has shape {list(got.shape)}, torch's {list(expected.shape)}")
    return float(abs(got.astype("float64") - expected.astype("float64")).max()) if expected.size else 0.0
