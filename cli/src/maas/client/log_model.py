"""`log_model`: a live torch module registered as an ONNX version, checked before it is sent.

The export runs on the caller's machine with torch.onnx's TorchScript-based
exporter (`dynamo=False`: it works offline, needs no onnxscript, and handles
convolutional networks and `nn.TransformerEncoder` alike), with the first
dimension of every input and output dynamic, so the served model takes any batch
size. The export is then run with onnxruntime on the example input and compared
with the module: a largest absolute difference over `tolerance` raises
FailedPrecondition and nothing is pushed. The difference is recorded on the
version as the `onnx_max_abs_diff` metric.

Needs torch and onnxruntime (`pip install 'maas[torch]'`), imported on first use.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maas.common import errors, software

if TYPE_CHECKING:
    import torch

    from maas.client.registry import Registry
    from maas.v1 import registry_pb2 as pb

OPSET = 17
# onnxruntime sums in another order than torch: typical networks differ by 1e-7 to 1e-5.
DEFAULT_TOLERANCE = 1e-4


def export_onnx(
    module: torch.nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    path: Path | str,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("logits",),
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = OPSET,
) -> float:
    """Write the module's ONNX export to `path`; the largest absolute difference from the module on
    the example input is returned, or FailedPrecondition raised (and no file left) over `tolerance`."""
    import torch

    examples = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if len(input_names) != len(examples):
        raise errors.InvalidArgument(f"input_names: {len(input_names)} names for {len(examples)} inputs")
    path = Path(path)
    model = copy.deepcopy(module).to("cpu").eval()
    cpu = tuple(t.detach().to("cpu") for t in examples)
    batch = {name: {0: "batch"} for name in (*input_names, *output_names)}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # Under no_grad, nn.TransformerEncoder and MultiheadAttention take a fused "fast path"
        # (aten::_transformer_encoder_layer_fwd) that has no ONNX form: export the plain ops.
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                cpu,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=batch,
                do_constant_folding=True,
            )
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise errors.FailedPrecondition(f"ONNX export failed: {_first_line(exc)}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        diff = _max_abs_diff(model, path, cpu, input_names)  # against the module as it runs, fast path and all
    except errors.MaasError:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise errors.FailedPrecondition(f"the ONNX export does not run in onnxruntime: {_first_line(exc)}") from exc
    if not math.isfinite(diff) or diff > tolerance:
        path.unlink(missing_ok=True)
        raise errors.FailedPrecondition(
            f"the ONNX export's outputs differ from the module's by up to {diff:.3g} on the example input, "
            f"over the tolerance {tolerance:g}; nothing was pushed"
        )
    return diff


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def _max_abs_diff(model: torch.nn.Module, path: Path, inputs: tuple[Any, ...], input_names: Sequence[str]) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model(*inputs)
    wanted = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    got = session.run(None, {name: t.numpy() for name, t in zip(input_names, inputs, strict=True)})
    if len(got) != len(wanted):
        raise errors.FailedPrecondition(f"the ONNX export has {len(got)} outputs, the module {len(wanted)}")
    worst = 0.0
    for ours, theirs in zip(got, wanted, strict=True):
        reference = theirs.detach().numpy()
        if ours.shape != reference.shape:
            raise errors.FailedPrecondition(
                f"the ONNX export's output has shape {list(ours.shape)}, the module's {list(reference.shape)}"
            )
        if reference.size:
            worst = max(worst, float(np.abs(ours.astype(np.float64) - reference.astype(np.float64)).max()))
    return worst


def log_model(
    name: str,
    module: torch.nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    *,
    labels: Sequence[str] | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    run_id: str = "",
    promote: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("logits",),
    registry: Registry | None = None,
    lineage: pb.Lineage | None = None,
) -> pb.ModelVersion:
    """Export `module` to ONNX (dynamic batch), check it against the module on `example_input`,
    and push it as a new version of `name`; returns the version, READY.

    Its lineage says source "log_model" and the maas, python, torch, onnx and onnxruntime
    versions that exported and checked it; `lineage` adds to it (a data set, a parent).

    >>> version = log_model("my-classifier", net, torch.randn(2, 3, 32, 32),
    ...                     labels=["cat", "dog"], promote="production")
    """
    from maas.client.push import with_defaults
    from maas.client.registry import Registry

    recorded = with_defaults(lineage, "log_model", software.versions("maas", "torch", "onnx", "onnxruntime"))
    with tempfile.TemporaryDirectory(prefix="maas-log-model-") as tmp:
        path = Path(tmp) / "model.onnx"
        diff = export_onnx(
            module, example_input, path, input_names=input_names, output_names=output_names, tolerance=tolerance
        )
        client = registry or Registry()
        try:
            return client.push(
                name,
                path,
                labels=labels,
                description=description,
                tags=tags,
                run_id=run_id,
                metrics={"onnx_max_abs_diff": diff},
                promote=promote,
                lineage=recorded,
            )
        finally:
            if registry is None:
                client.close()
