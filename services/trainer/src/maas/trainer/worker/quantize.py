"""int8 quantization and ORT-format conversion of an ONNX model with onnxruntime, usable in-process.

`quantize_onnx` is what an optimization job runs and what a benchmark can call
directly: ORT's pre-processing (shape inference and graph cleanup, which lets
the quantizer see every tensor's shape), then either

- dynamic quantization: 8-bit (uint8) weights, activations quantized at run time from
  their observed range (MatMulInteger/ConvInteger); needs no data, and suits
  networks made of matrix products (MLPs, transformers); or
- static quantization: int8 weights and activations, the activations' ranges
  calibrated (min/max) on training batches, written as QuantizeLinear/
  DequantizeLinear pairs (QDQ) that onnxruntime fuses into int8 kernels;
  weights per output channel for convolutional networks, where one scale
  per tensor loses the small filters.

`choose_method` picks static for a graph with convolutions (dynamic
ConvInteger is slower than float on the CPU) and dynamic otherwise.
`to_ort` writes ONNX Runtime's ORT format the way
onnxruntime.tools.convert_onnx_models_to_ort does by default (fixed
optimizations at the 'all' level without the x86-only NCHWc layout, so the
file runs on ARM and x86 alike), through the session options alone.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("dynamic", "static")
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
PORTABLE_DISABLED = ["NchwcTransformer"]


@dataclass(frozen=True)
class Quantized:
    path: Path
    method: str  # dynamic or static
    per_channel: bool
    preprocessed: bool  # False: ORT's pre-processing failed and the model was quantized as it was
    size_bytes: int
    calibration_batches: int = 0


def has_convolutions(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in CONV_OPS for node in graph.node)


def choose_method(path: Path, requested: str = "") -> str:
    """`requested` when given, else static for convolutional graphs and dynamic otherwise."""
    if requested:
        if requested not in METHODS:
            raise ValueError(f"unknown quantization method '{requested}' ({', '.join(METHODS)})")
        return requested
    return "static" if has_convolutions(path) else "dynamic"


class BatchReader:
    """onnxruntime's CalibrationDataReader over input batches: one feed per batch, rewindable.

    (Duck-typed: the quantizer calls get_next until it returns None, and rewind.)
    """

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self._batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self._iter: Iterator[np.ndarray] = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def input_name(path: Path) -> str:
    return str(session(path).get_inputs()[0].name)


def quantize_onnx(
    src: Path,
    dst: Path,
    method: str = "",
    calibration: Iterable[np.ndarray] | None = None,
    *,
    per_channel: bool | None = None,
) -> Quantized:
    """Write the int8 model of `src` to `dst`. `calibration`: input batches (static only, required)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    method = choose_method(src, method)
    conv = has_convolutions(src)
    channelwise = conv if per_channel is None else per_channel
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as work:
        model, preprocessed = _preprocess(src, Path(work) / "pre.onnx")
        tmp = dst.with_name(f".{dst.name}.tmp")
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the quantizer's pre-processing advice goes to the root logger
        try:
            if method == "dynamic":
                # uint8 weights (U8U8 MatMulInteger): with int8 weights, onnxruntime's U8S8 kernels saturate on
                # x86 CPUs without VNNI (AVX2, AVX-512F), which cost a digits MLP 15 points of agreement there.
                quantize_dynamic(model, tmp, weight_type=QuantType.QUInt8, per_channel=channelwise)
                batches = 0
            else:
                reader = BatchReader(input_name(model), calibration or [])
                if not len(reader):
                    raise ValueError("static quantization needs calibration batches")
                quantize_static(
                    model,
                    tmp,
                    reader,  # type: ignore[arg-type]
                    quant_format=QuantFormat.QDQ,
                    per_channel=channelwise,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                )
                batches = len(reader)
        finally:
            quiet.setLevel(level)
    _prune_opsets(tmp)
    _durable(tmp, dst)
    return Quantized(dst, method, channelwise, preprocessed, dst.stat().st_size, batches)


def _prune_opsets(path: Path) -> None:
    """Drop operator-set imports no node uses: the pre-processor's optimizer imports every domain it knows
    (ai.onnx.training, com.microsoft.nchwc, ...), which runtimes without them (and the registry) refuse."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    used = {node.domain or "" for node in model.graph.node}
    used |= {node.domain or "" for fn in model.functions for node in fn.node}
    used |= {fn.domain for fn in model.functions}

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            used.add(node.domain or "")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    kept = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))


def _preprocess(src: Path, dst: Path) -> tuple[Path, bool]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception:  # noqa: BLE001 - pre-processing only helps; the quantizer works on the model as it is
        return src, False
    return dst, True


def to_ort(src: Path, dst: Path) -> Path:
    """Write `src` in ORT format (what ONNX Runtime Mobile loads) to `dst`."""
    import onnxruntime as ort

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"], disabled_optimizers=PORTABLE_DISABLED)
    _durable(tmp, dst)
    return dst


def _durable(tmp: Path, dst: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def outputs(sess: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The first output over `x`, run in batches."""
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0


def latency(sess: Any, batch: np.ndarray, *, rounds: int = 7, repeats: int) -> float:
    """Median over `rounds` of the mean seconds of one run on `batch` (`repeats` runs per round)."""
    name = sess.get_inputs()[0].name
    feed = {name: batch}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            sess.run(None, feed)
        times.append((time.perf_counter() - start) / repeats)
    return statistics.median(times)


def repeats_for(sess: Any, batch: np.ndarray, round_seconds: float = 0.05) -> int:
    """Runs per timed round so that a round of `sess` lasts about `round_seconds` (1 to 1000)."""
    name = sess.get_inputs()[0].name
    sess.run(None, {name: batch})
    start = time.perf_counter()
    sess.run(None, {name: batch})
    one = max(time.perf_counter() - start, 1e-6)
    return max(1, min(1000, int(round_seconds / one)))
