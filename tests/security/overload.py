"""Drives the inference service past its capacity (shared by the overload test and bench/overload.py).

The served model is deliberately slow and takes one row at a time (an ONNX
chain of products with the identity, about 50 ms per request on one thread),
so its capacity is small enough for a Python load generator to offer ten
times as much. Capacity is measured with a short closed loop; the overload is
an open loop: calls are sent on schedule at the offered rate from many
connections, whatever comes back, as independent clients would.

Calls are generic (raw bytes, serialized once): nothing here imports maas.oip.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support

MODEL = "overload"
INFER = "/inference.GRPCInferenceService/ModelInfer"
WIDTH, DEPTH = 1024, 350
SIGNATURE = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, WIDTH]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, WIDTH]}],
}
# The bounded queue is what keeps admitted requests fast: past it, RESOURCE_EXHAUSTED at once.
SERVER_SETTINGS: dict[str, Any] = {"max_queue_size": 16, "instances": 1}


def onnx_slow(width: int = WIDTH, depth: int = DEPTH) -> bytes:
    """[1, width] -> [1, width] through `depth` products with the identity: exact, and slow on purpose."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, previous = [], "input"
    for i in range(depth):
        out = "output" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, "eye"], [out]))
        previous = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width])],
        initializer=[numpy_helper.from_array(np.eye(width, dtype=np.float32), "eye")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def register(client: BlockingRegistryClient) -> None:
    support.register_onnx(client, MODEL, onnx_slow(), SIGNATURE)


def request(seed: int = 0) -> tuple[bytes, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((1, WIDTH)).astype(np.float32)
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString(), x


def output_of(reply: bytes) -> np.ndarray:
    response = pb.ModelInferResponse.FromString(reply)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, WIDTH)


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    sent: float  # monotonic seconds
    latency: float  # seconds
    reply: bytes


def channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """`count` connections (own subchannel pools): independent clients."""
    return [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]


async def _call(channel: grpc.aio.Channel, body: bytes, timeout: float) -> Outcome:
    sent = time.monotonic()
    try:
        reply = await channel.unary_unary(INFER)(body, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), sent, time.monotonic() - sent, b"")
    return Outcome(grpc.StatusCode.OK, sent, time.monotonic() - sent, reply)


async def closed_loop(address: str, body: bytes, *, concurrency: int, requests: int) -> tuple[float, list[Outcome]]:
    """`concurrency` clients, each sending its next request when its last one is answered: (requests/s, outcomes)."""
    pool = channels(address, concurrency)
    outcomes: list[Outcome] = []
    remaining = requests

    async def client(channel: grpc.aio.Channel) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            outcomes.append(await _call(channel, body, 60))

    try:
        start = time.monotonic()
        await asyncio.gather(*(client(c) for c in pool))
        elapsed = time.monotonic() - start
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    return len(outcomes) / elapsed, outcomes


async def open_loop(
    address: str, body: bytes, *, rate: float, count: int, connections: int, timeout: float = 60
) -> list[Outcome]:
    """`count` calls sent on schedule at `rate` per second over `connections` clients, answered or not."""
    pool = channels(address, connections)
    tasks: list[asyncio.Task[Outcome]] = []
    try:
        for channel in pool:
            await channel.channel_ready()
        start = time.monotonic()
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_call(pool[i % connections], body, timeout)))
        return list(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(c.close() for c in pool))


def start(workdir: Path) -> tuple[support.Process, support.Process]:
    """A registry with the slow model, and an inference process serving it: (registry, inference)."""
    registry = support.start_registry(workdir / "registry")
    client = support.registry_client(registry.address)
    try:
        register(client)
    finally:
        client.close()
    inference = support.start_inference(registry.address, workdir / "inference", models=MODEL, **SERVER_SETTINGS)
    return registry, inference
