"""The ONNX artifact of a text classifier, checked against the torch module it came from.

As `onnx_export` does for the catalog's networks: the `TextClassifier`
wrapper is exported with torch.onnx's TorchScript-based exporter
(`dynamo=False`, offline), here with two int64 inputs, `input_ids` and
`attention_mask`, whose batch and sequence dimensions are both dynamic, and
`logits` out; onnxruntime then runs it on the job's validation batch (already
tokenized, `maas.common.tokenization.encode_batch`) and `onnx_export.checked`
keeps it only within the tolerance. Nothing here fails the job.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch

from maas.common.text_architectures import INPUT_NAMES, OUTPUT_NAME
from maas.common.text_models import TextClassifier
from maas.common.tokenization import Encoded
from maas.trainer.worker.onnx_export import MAX_CHECK_ROWS, OPSET, OnnxResult, checked


def export(model: TextClassifier, batch: Encoded, directory: Path, tolerance: float) -> OnnxResult:
    """Write directory/model.onnx when the export computes what `model` does on `batch` within `tolerance`."""
    ids = torch.from_numpy(batch.input_ids[:MAX_CHECK_ROWS])
    mask = torch.from_numpy(batch.attention_mask[:MAX_CHECK_ROWS])

    def write_and_compare(tmp: Path) -> float:
        module = copy.deepcopy(model).to("cpu").eval()
        _export(module, ids[:2], mask[:2], tmp)
        return _max_abs_diff(module, tmp, ids, mask)

    return checked(directory, tolerance, len(ids), "validation texts", write_and_compare)


def _export(module: TextClassifier, ids: torch.Tensor, mask: torch.Tensor, path: Path) -> None:
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**dynamic, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )


def _max_abs_diff(module: TextClassifier, path: Path, ids: torch.Tensor, mask: torch.Tensor) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = module(ids, mask).numpy()
    (got,) = session.run(None, dict(zip(INPUT_NAMES, (ids.numpy(), mask.numpy()), strict=True)))
    if got.shape != expected.shape:
        raise ValueError(f"onnxruntime's output has shape {list(got.shape)}, torch's {list(expected.shape)}")
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if expected.size else 0.0
