"""Runtimes that execute a served version: torch (safetensors + catalog) and onnxruntime.

Neither ever unpickles: torch weights come from safetensors files loaded into a
module the catalog builds from its declarative architecture (strict=True), and
ONNX files are protobuf graphs run by onnxruntime. Each runtime maps numpy
arrays in signature order to numpy arrays in signature order; it is called on
executor threads, several at once when a model has several instances.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from maas.common import errors
from maas.inference.tensors import DATATYPE_OF, Signature, TensorSpec

log = logging.getLogger("maas.inference.runtimes")

ONNX_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


class Runtime(Protocol):
    platform: str
    backend: str
    device: str
    """"cpu", "cuda" or "cuda:N"."""

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "auto"
    intra_op_threads: int = 1


def resolve_device(requested: str) -> str:
    """Where to run: "cpu", "cuda", or "cuda:N" when a deployment names one GPU of several."""
    if requested == "cpu":
        return "cpu"
    import torch

    if requested.startswith("cuda:"):
        index = int(requested.removeprefix("cuda:"))
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise errors.FailedPrecondition(f"{requested} was requested but this replica has {count} GPUs")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise errors.FailedPrecondition("CUDA was requested but no GPU is available")
    return "cpu"


# ------------------------------------------------------------------- torch


class TorchRuntime:
    platform = "pytorch"
    backend = "pytorch"

    def __init__(self, module: Any, device: str, threads: int = 1) -> None:
        self.module = module
        self.device = device
        self.threads = threads
        self._thread = threading.local()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        if not getattr(self._thread, "ready", False):
            # A thread's first GEMM otherwise uses OpenMP's default (every core), not
            # the process's torch.set_num_threads: measured here, executor threads ran
            # MKL on 2 threads (and gave other bits) while the main thread used 1.
            torch.set_num_threads(self.threads)
            self._thread.ready = True
        with torch.inference_mode():
            x = torch.from_numpy(inputs[0])
            if self.device != "cpu":
                x = x.to(self.device, non_blocking=True)
            y = self.module(x)
            return [y.detach().to("cpu").numpy()]

    def close(self) -> None:
        self.module = None


def load_torch(architecture: dict[str, Any], weights: Path, options: RuntimeOptions) -> tuple[TorchRuntime, Signature]:
    """Build the catalog module, load the safetensors weights strictly, and its signature."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from maas.common import catalog

    arch = catalog.parse(architecture)  # InvalidArgument names what is wrong
    module = catalog.build(arch)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise errors.FailedPrecondition(f"the artifact is not a readable safetensors file ({_short(exc)})") from None
    try:
        catalog.load_weights(module, arch, state)  # the plain layout, or the legacy prefixed one
    except RuntimeError as exc:
        raise errors.FailedPrecondition(f"the weights do not fit architecture '{arch.name}' ({_short(exc)})") from None
    device = resolve_device(options.device)
    module = module.eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    sig = arch.signature()
    signature = Signature(
        tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in sig["inputs"]),
        tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in sig["outputs"]),
    )
    return TorchRuntime(module, device, options.intra_op_threads), signature


# -------------------------------------------------------------------- onnx


class OnnxRuntime:
    platform = "onnxruntime_onnx"
    backend = "onnxruntime"

    def __init__(self, session: Any, input_names: list[str], output_names: list[str], device: str) -> None:
        self.session = session
        self.input_names = input_names
        self.output_names = output_names
        self.device = device

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

        try:
            outputs = self.session.run(self.output_names, dict(zip(self.input_names, inputs, strict=True)))
        except (InvalidArgument, Fail) as exc:
            # The graph refused these values (e.g. an index out of range).
            raise errors.InvalidArgument(f"the model rejected the input: {_short(exc)}") from None
        return [np.asarray(o) for o in outputs]

    def close(self) -> None:
        self.session = None


def load_onnx(path: Path, declared: Signature | None, options: RuntimeOptions) -> tuple[OnnxRuntime, Signature]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    device = resolve_device(options.device)
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    else:
        device = "cpu"
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        raise errors.FailedPrecondition(f"the artifact is not a loadable ONNX model ({_short(exc)})") from None
    found = Signature(
        tuple(_onnx_spec(i) for i in session.get_inputs()),
        tuple(_onnx_spec(o) for o in session.get_outputs()),
    )
    signature = found
    if declared is not None and declared.inputs:
        _check_declared(declared, found)
        signature = declared
    runtime = OnnxRuntime(session, [t.name for t in signature.inputs], [t.name for t in signature.outputs], device)
    return runtime, signature


def _onnx_spec(node: Any) -> TensorSpec:
    datatype = ONNX_DATATYPE.get(node.type, node.type)
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in node.shape)
    return TensorSpec(node.name, datatype, shape)


def _check_declared(declared: Signature, found: Signature) -> None:
    for kind, want, have in (("input", declared.inputs, found.inputs), ("output", declared.outputs, found.outputs)):
        by_name = {t.name: t for t in have}
        if {t.name for t in want} != set(by_name) and kind == "input":
            raise errors.FailedPrecondition(f"the signature's inputs do not match the ONNX graph's {sorted(by_name)}")
        for t in want:
            got = by_name.get(t.name)
            if got is None:
                raise errors.FailedPrecondition(f"{kind} '{t.name}' of the signature is not in the ONNX graph")
            if got.datatype != t.datatype or len(got.shape) != len(t.shape):
                raise errors.FailedPrecondition(f"{kind} '{t.name}': the signature disagrees with the ONNX graph")


# ------------------------------------------------------- warm-up and probe


def example_inputs(signature: Signature, rows: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in signature.inputs:
        shape = signature.example_shape(spec, rows)
        if spec.dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(spec.dtype))
        else:
            arrays.append(rng.integers(0, 2, size=shape).astype(spec.dtype))
    return arrays


def warm_up(runtime: Runtime, signature: Signature, max_rows: int) -> None:
    """Run the model once per probe size; check what comes back against the signature."""
    for rows in sorted({1, max(1, max_rows)}):
        check_outputs(signature, runtime.run(example_inputs(signature, rows)), rows)


def check_outputs(signature: Signature, outputs: list[np.ndarray], rows: int) -> None:
    """FailedPrecondition unless `outputs` of an execution of `rows` rows are what the signature declares."""
    if len(outputs) != len(signature.outputs):
        raise errors.FailedPrecondition(
            f"the model returned {len(outputs)} outputs, its signature declares {len(signature.outputs)}"
        )
    for spec, out in zip(signature.outputs, outputs, strict=True):
        got = DATATYPE_OF.get(out.dtype.newbyteorder("<"), str(out.dtype))
        if got != spec.datatype:
            raise errors.FailedPrecondition(f"output '{spec.name}' is {got}, the signature declares {spec.datatype}")
        if len(out.shape) != len(spec.shape) or any(
            want not in (-1, have) for want, have in zip(spec.shape, out.shape, strict=True)
        ):
            raise errors.FailedPrecondition(
                f"output '{spec.name}' has shape {list(out.shape)}, the signature declares {list(spec.shape)}"
            )
        if signature.batched and out.shape[0] != rows:
            raise errors.FailedPrecondition(f"output '{spec.name}' does not keep the batch dimension")


def probe_sizes(max_rows: int) -> list[int]:
    """Execution sizes the probe tries: every size up to 64, then a sample that includes the max."""
    sizes = set(range(1, min(max_rows, 64) + 1))
    power = 64
    while power < max_rows:
        sizes.update((power - 1, power, power + 1))
        power *= 2
    sizes.update(range(max(1, max_rows - 2), max_rows + 1))
    return sorted(s for s in sizes if 1 <= s <= max_rows)


def probe_min_rows(runtime: Runtime, signature: Signature, max_rows: int, rounds: int = 2) -> int | None:
    """The smallest execution size from which each row's result no longer depends on its batch.

    Math libraries choose kernels by matrix shape: measured here, torch on CPU
    gives a row different last bits at 1 row, at 2-3 rows and at 4 or more (and
    with two intra-op threads also by position below 12 rows), while every
    execution of 4+ rows (16+ with two threads) agrees, whatever the row's
    position and neighbours. So an execution padded to at least that size
    answers each row exactly as if it had come alone.

    Each round computes `max_rows` random rows in one execution (the reference),
    then every probed size M once, with rows of that pool in a shuffled order:
    in the first round beside other random rows, in the second beside zeros
    (the padding the batcher adds). The answer is the smallest M0 in 1, 2, 4,
    8, ... (<= max_rows) such that every probed size >= M0 reproduced the
    reference bit for bit; None when none does (or the probe fails) - then
    the batcher computes each request on its own rows.
    """
    if not signature.batched:
        return None
    if max_rows <= 1:
        return 1
    sizes = probe_sizes(max_rows)
    agrees = dict.fromkeys(sizes, True)
    try:
        for round_ in range(rounds):
            pool = example_inputs(signature, max_rows, seed=100 + round_)
            reference = runtime.run(pool)
            rng = np.random.default_rng(round_)
            for size in sizes:
                order = rng.permutation(max_rows)[:size]
                real = size if round_ == 0 else max(1, size // 2)
                batch = [a[order] for a in pool]
                if real < size:
                    for b in batch:
                        b[real:] = 0
                outputs = runtime.run(batch)
                for ref, out in zip(reference, outputs, strict=True):
                    if ref[order[:real]].tobytes() != out[:real].tobytes():
                        agrees[size] = False
    except Exception:
        log.debug("batch-invariance probe failed", exc_info=True)
        return None
    candidate = 1
    while candidate <= max_rows:
        if all(ok for size, ok in agrees.items() if size >= candidate):
            return candidate
        candidate *= 2
    return None


def _short(exc: BaseException) -> str:
    """An exception's first line, without file system paths."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    parts = [p if os.sep not in p else "<path>" for p in text.split()]
    return " ".join(parts)[:200]
