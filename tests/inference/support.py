"""Processes and models for the inference tests (and the benchmark).

The inference server always runs as its own process: its generated protocol
modules and tritonclient's register the same `inference.*` proto symbols, so
this module (imported next to tritonclient) must never import maas.oip or the
service's servicer. It starts a real registry and real inference processes,
and registers real models: catalog networks with safetensors weights, and
small ONNX graphs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import BlockingRegistryClient
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb
from tests.processes import kill_at_exit

ROOT = Path(__file__).resolve().parents[2]

MLP_ARCH = {"name": "mlp", "args": {"hidden": [128], "num_classes": 10}, "input_shape": [64]}
LENET_ARCH = {"name": "lenet", "args": {"num_classes": 10}, "input_shape": [3, 32, 32]}


@dataclass
class Process:
    popen: subprocess.Popen[str]
    address: str
    log_path: Path
    lines: list[str] = field(default_factory=list)
    http_url: str = ""
    """The inference service's HTTP/REST base URL (http://HOST:PORT), when it serves one."""

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start(
    module: str, env: dict[str, str], log_path: Path, *, ready: str, count: int = 1, timeout: float = 90.0
) -> Process:
    """Run `python -m module` and wait for `count` lines '<ready> listening on HOST:PORT'."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    log = log_path.open("w")
    popen = kill_at_exit(
        subprocess.Popen(
            [sys.executable, "-m", module], env=full_env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
        )
    )
    proc = Process(popen, "", log_path)
    seen: list[str] = []
    done = threading.Event()

    def pump() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            proc.lines.append(line)
            if line.startswith(f"{ready} http listening on ") and not proc.http_url:
                proc.http_url = line.split("listening on ", 1)[1].strip()
            if line.startswith(f"{ready} listening on "):
                seen.append(line.split("listening on ", 1)[1].split(",")[0].strip())
                if len(seen) >= count:
                    done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.1):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{module} did not start in {timeout}s:\n{proc.log()[-3000:]}")
    if len(seen) < count:
        proc.kill()
        raise RuntimeError(f"{module} exited before listening:\n{proc.log()[-3000:]}")
    proc.address = seen[0]
    return proc


def start_registry(workdir: Path, port: int = 0) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "MAAS_REGISTRY_PORT": str(port),
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_REGISTRY_DATABASE_URL": f"sqlite:///{workdir / 'registry.db'}",
        "MAAS_REGISTRY_ARTIFACT_ROOT": str(workdir / "artifacts"),
        "MAAS_REGISTRY_EVENT_POLL_INTERVAL": "0.05",
        "MAAS_REGISTRY_GRACE_SECONDS": "1",
    }
    return start("maas.registry", env, workdir / f"registry-{time.time_ns()}.log", ready="registry")


def start_inference(
    registry: str, workdir: Path, *, models: str = "", workers: int = 1, port: int = 0, **settings: Any
) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "MAAS_INFERENCE_PORT": str(port),
        "MAAS_INFERENCE_METRICS_PORT": "0",
        "MAAS_INFERENCE_HTTP_PORT": "0",
        "MAAS_INFERENCE_REGISTRY_ADDRESS": registry,
        "MAAS_INFERENCE_CACHE_DIR": str(workdir / "cache"),
        "MAAS_INFERENCE_MODELS": models,
        "MAAS_INFERENCE_WORKERS": str(workers),
        "MAAS_INFERENCE_GRACE_SECONDS": "2",
        "MAAS_INFERENCE_RECONNECT_INITIAL_SECONDS": "0.2",
        "MAAS_INFERENCE_RECONNECT_MAX_SECONDS": "1",
    }
    env.update({f"MAAS_INFERENCE_{k.upper()}": str(v) for k, v in settings.items()})
    return start("maas.inference", env, workdir / f"inference-{time.time_ns()}.log", ready="inference", count=workers)


# ------------------------------------------------------------------ models


def registry_client(address: str) -> BlockingRegistryClient:
    return BlockingRegistryClient(ChannelConfig(address, timeout=30))


def signature_pb(doc: dict[str, Any]) -> common_pb2.Signature:
    def spec(t: dict[str, Any]) -> common_pb2.TensorSpec:
        return common_pb2.TensorSpec(
            name=t["name"], datatype=common_pb2.DataType.Value(f"DATA_TYPE_{t['datatype']}"), shape=t["shape"]
        )

    return common_pb2.Signature(inputs=[spec(t) for t in doc["inputs"]], outputs=[spec(t) for t in doc["outputs"]])


def torch_model(arch_doc: dict[str, Any], seed: int) -> Any:
    import torch

    from maas.common import catalog

    torch.manual_seed(seed)
    module = catalog.build(catalog.parse(arch_doc)).eval()
    return module


def upload(client: BlockingRegistryClient, model: str, fmt: int, data: bytes, **create: Any) -> int:
    client.ensure_model(model)
    version = client.create_version(model, format=fmt, **create)
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        client.upload_artifact(model, version.version, Path(f.name))
    return int(version.version)


def register_torch(
    client: BlockingRegistryClient,
    model: str,
    arch_doc: dict[str, Any],
    *,
    seed: int = 0,
    alias: str | None = "production",
    state: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """Register a catalog network with real weights; returns (version, module)."""
    from safetensors.torch import save

    from maas.common import catalog

    module = torch_model(arch_doc, seed)
    arch = catalog.parse(arch_doc)
    weights = save(state if state is not None else module.state_dict())
    version = upload(
        client,
        model,
        rpb.MODEL_FORMAT_SAFETENSORS,
        weights,
        architecture=arch_doc,
        signature=signature_pb(arch.signature()),
    )
    if alias:
        client.set_alias(model, alias, version)
    return version, module


def onnx_bytes(graph: Any, *, check: bool = True) -> bytes:
    """An opset-17 model of `graph`, serialized (checked by onnx unless told not to)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_sum(width: int = 4) -> bytes:
    """sum = a + b, both [-1, width] FP32: a model with two inputs."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "sum",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in ("a", "b")],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", width])],
    )
    return onnx_bytes(graph)


def onnx_identity(width: int = 64) -> bytes:
    """A model that does nothing: output = input, [-1, width] FP32."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
    )
    return onnx_bytes(graph)


def onnx_unknown_op(width: int = 64) -> bytes:
    """A well-formed graph whose one node is an operator no runtime implements: [-1, width] FP32."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["input"], ["output"])],
        "unknown_op",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
    )
    return onnx_bytes(graph, check=False)


def onnx_identity_image(shape: tuple[int, int, int] = (3, 32, 32)) -> bytes:
    """A model that does nothing on images: output = input, [-1, C, H, W] FP32."""
    from onnx import TensorProto, helper

    dims = ["batch", *shape]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity_image",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)],
    )
    return onnx_bytes(graph)


def onnx_dense(seed: int, width: int = 64, outputs: int = 256) -> tuple[bytes, np.ndarray, np.ndarray]:
    """One dense layer, output = input @ weight + bias: FP32 [-1, width] -> [-1, outputs]; (graph, weight, bias).

    Its file is about 4 * width * outputs bytes (the weight), what a memory limit counts for it.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((width, outputs)).astype(np.float32)
    bias = rng.standard_normal(outputs).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "weight"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["output"]),
        ],
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    return onnx_bytes(graph), weight, bias


def dense_signature(width: int = 64, outputs: int = 256) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, width]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, outputs]}],
    }


def onnx_lookup(rows: int = 10, width: int = 4) -> tuple[bytes, np.ndarray]:
    """An embedding lookup: INT64 indices [-1, 1] -> FP32 [-1, 1, width]. An index past the table fails."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(rows * width, dtype=np.float32).reshape(rows, width) / 7.0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["embedding"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1, width])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return onnx_bytes(graph), table


def register_onnx(
    client: BlockingRegistryClient, model: str, data: bytes, signature: dict[str, Any], alias: str | None = "production"
) -> int:
    version = upload(client, model, rpb.MODEL_FORMAT_ONNX, data, signature=signature_pb(signature))
    if alias:
        client.set_alias(model, alias, version)
    return version


IDENTITY_SIGNATURE = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 64]}],
}
IDENTITY_IMAGE_SIGNATURE = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
}
SUM_SIGNATURE = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
    ],
    "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1, 4]}],
}
LOOKUP_SIGNATURE = {
    "inputs": [{"name": "index", "datatype": "INT64", "shape": [-1, 1]}],
    "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 1, 4]}],
}


def expected(module: Any, x: np.ndarray, min_rows: int) -> np.ndarray:
    """The module's answer computed here, one thread, on these rows padded with zero rows to `min_rows`.

    The server pads every execution to the model's minimum execution size (its
    ModelConfig parameter min_execution_rows), from which each row's bits do
    not depend on the batch; computed the same way here, the answer is exact.
    """
    import torch

    torch.set_num_threads(1)
    padded = np.zeros((max(min_rows, x.shape[0]), *x.shape[1:]), dtype=x.dtype)
    padded[: x.shape[0]] = x
    with torch.inference_mode():
        return module(torch.from_numpy(padded)).numpy()[: x.shape[0]]


def min_execution_rows(address: str, model: str) -> int:
    """What the server found for `model` at warm-up (ModelConfig parameter min_execution_rows)."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(address)
    try:
        config = client.get_model_config(model).config
    finally:
        client.close()
    return int(config.parameters["min_execution_rows"].string_value)


BATCHING_CONFIG = {
    "max_batch_size": 8,
    "dynamic_batching": {"preferred_batch_size": [2], "max_queue_delay_microseconds": 500_000},
}


async def pairs_until_stacked(client: Any, model: str, pair: Any, rounds: int = 30) -> int:
    """Send pairs of concurrent requests until one pair shared an execution; how many pairs were sent.

    A request waits for company only once the batcher has seen two at once, so
    the first pairs may run alone; each pair is checked by `pair` either way.
    """

    async def stacked_pairs() -> int:
        stats = (await client.get_inference_statistics(model)).model_stats[0]
        return next((b.compute_infer.count for b in stats.batch_stats if b.batch_size == 2), 0)

    before = await stacked_pairs()
    for sent in range(1, rounds + 1):
        await pair()
        if await stacked_pairs() > before:
            return sent
    raise AssertionError(f"the two requests were never stacked into one execution in {rounds} pairs")
