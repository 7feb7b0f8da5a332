"""ExecuTorch's .pte edge format of a version's torch module, checked by running it.

The served module (normalization inside it, as the ONNX export has it, so the
.pte takes the same raw input as the version's ONNX model) is captured with
torch.export with a dynamic batch of 1..MAX_BATCH rows, lowered to XNNPACK
(ExecuTorch's CPU backend for ARM and x86) and written as an ExecuTorch
program. Then executorch.runtime loads the written file and runs the
validation rows in chunks of at most MAX_BATCH; the largest absolute
difference from the torch module's outputs is the check. executorch is
imported here only, in the worker: a trainer without maas-trainer[edge] never
gets this far (OptimizeVersion refuses pte).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

FILE = "model.pte"
# The batch range the program takes. The inference service takes at most 32 rows per execution by
# default; 64 leaves a device room for larger batches at no cost in file size.
MAX_BATCH = 64
# XNNPACK's lowering re-traces convolutions on the example batch: with fewer than 16 rows it narrows
# the dynamic batch to below 16, so the example has at least that many (and at most MAX_BATCH).
EXAMPLE_ROWS = 32
MAX_CHECK_ROWS = 256


@dataclass(frozen=True)
class PteResult:
    ok: bool
    tolerance: float
    max_abs_diff: float | None = None
    size_bytes: int = 0
    checked_rows: int = 0
    reason: str = ""


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("executorch") is not None


def export(module: nn.Module, rows: np.ndarray, directory: Path, tolerance: float) -> PteResult:
    """Write directory/model.pte when the program computes what `module` does on `rows` within `tolerance`."""
    check = torch.from_numpy(np.ascontiguousarray(rows[:MAX_CHECK_ROWS], dtype=np.float32))
    tmp, dst = directory / f".{FILE}.tmp", directory / FILE
    try:
        model = copy.deepcopy(module).to("cpu").eval()
        _write(model, tuple(check.shape[1:]), tmp)
        got = run(tmp, check)
        with torch.inference_mode():
            expected = model(check).numpy()
        if got.shape != expected.shape:
            raise ValueError(f"the program answers shape {list(got.shape)}, torch {list(expected.shape)}")
        diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if expected.size else 0.0
    except Exception as exc:  # noqa: BLE001 - an exporter or runtime refusal is this format's, said in the result
        tmp.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return PteResult(False, tolerance, reason=f"ExecuTorch export failed: {type(exc).__name__}: {first}")
    if not math.isfinite(diff) or diff > tolerance:
        tmp.unlink(missing_ok=True)
        return PteResult(
            False,
            tolerance,
            diff if math.isfinite(diff) else None,
            checked_rows=len(check),
            reason=f"ExecuTorch export refused: the .pte's outputs differ from torch's by up to {diff:.3g} "
            f"on {len(check)} validation rows, over the tolerance {tolerance:g}",
        )
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    return PteResult(True, tolerance, diff, dst.stat().st_size, len(check))


def _write(model: nn.Module, row_shape: tuple[int, ...], path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch.export import Dim, export

    example = (torch.randn(EXAMPLE_ROWS, *row_shape),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = export(model, example, dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    with path.open("wb") as f:
        lowered.write_to_file(f)


def run(path: Path, x: torch.Tensor) -> np.ndarray:
    """The program's forward on `x`, in chunks of at most MAX_BATCH rows."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    outs = [method.execute([x[i : i + MAX_BATCH].contiguous()])[0] for i in range(0, len(x), MAX_BATCH)]
    return torch.cat([torch.as_tensor(o) for o in outs]).numpy() if outs else np.zeros((0,), np.float32)
