"""Many models in bounded memory: a replica serves more models than its memory limit holds.

Real processes: a registry holding the models, and an inference service with
MAAS_INFERENCE_MEMORY_LIMIT set, driven by tritonclient. What must hold: no
request fails because of the limit (evicted models load again on their next
request), the loaded versions never count more than the limit, evictions and
cold starts are visible in the metrics and the repository index, and a
version evicted while requests are in flight finishes them first.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from tests.helpers import unused_port
from tests.inference import support

MODELS = 12
HOLDS = 3  # the limit below holds three of them


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def total(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in metrics.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


@pytest.fixture(scope="module")
def dense_models(registry: BlockingRegistryClient) -> Iterator[dict[str, tuple[np.ndarray, np.ndarray, int]]]:
    """Twelve dense layers of the same size and different weights: name -> (weight, bias, file size)."""
    models = {}
    for i in range(MODELS):
        graph, weight, bias = support.onnx_dense(seed=i)
        support.register_onnx(registry, f"dense{i}", graph, support.dense_signature())
        models[f"dense{i}"] = (weight, bias, len(graph))
    yield models


async def test_twelve_models_under_a_limit_of_three_answer_every_request(
    workdir: Path, registry_process: support.Process, dense_models: dict[str, tuple[np.ndarray, np.ndarray, int]]
) -> None:
    size = max(s for _, _, s in dense_models.values())
    limit = size * HOLDS + size // 2
    metrics_port = unused_port()
    proc = support.start_inference(
        registry_process.address,
        workdir / "many",
        models=",".join(dense_models),
        memory_limit=limit,
        metrics_port=metrics_port,
    )
    try:
        # Configured beyond the limit: three loaded, the others kept for their first request.
        deadline = time.monotonic() + 60
        with tc.InferenceServerClient(proc.address) as client:
            while True:
                index = client.get_model_repository_index(as_json=True)["models"]
                states = [m.get("state") for m in index if m["name"] in dense_models]
                if ("LOADING" not in states and len(states) == MODELS) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert states.count("READY") == HOLDS and states.count("UNAVAILABLE") == MODELS - HOLDS, index
        assert all("a request loads it" in m["reason"] for m in index if m.get("state") == "UNAVAILABLE")

        names = sorted(dense_models)
        failures: list[BaseException] = []
        answered: list[str] = []
        peaks: list[float] = []
        done = asyncio.Event()

        def check(model: str, x: np.ndarray, y: np.ndarray | None) -> None:
            weight, bias, _ = dense_models[model]
            assert y is not None and np.allclose(y, x @ weight + bias, rtol=1e-4, atol=1e-4), model
            answered.append(model)

        async def unary(k: int) -> None:
            rng = random.Random(k)
            async with tca.InferenceServerClient(proc.address) as c:
                for i in range(30):
                    model = rng.choice(names)
                    x = np.random.default_rng(k * 1000 + i).standard_normal((1, 64)).astype(np.float32)
                    tensor = tca.InferInput("input", [1, 64], "FP32")
                    tensor.set_data_from_numpy(x)
                    try:
                        result = await c.infer(model, [tensor], client_timeout=60)
                    except InferenceServerException as exc:
                        failures.append(exc)
                        continue
                    check(model, x, result.as_numpy("output"))

        async def streamed() -> None:
            """One ModelStreamInfer stream over every model: cold ones wait in the stream, others go on."""
            rng = random.Random(99)
            sent = {}
            async with tca.InferenceServerClient(proc.address) as c:

                async def requests() -> object:
                    for i in range(36):
                        model = rng.choice(names)
                        x = np.random.default_rng(50_000 + i).standard_normal((1, 64)).astype(np.float32)
                        tensor = tca.InferInput("input", [1, 64], "FP32")
                        tensor.set_data_from_numpy(x)
                        sent[str(i)] = (model, x)
                        yield {"model_name": model, "inputs": [tensor], "request_id": str(i)}

                async for result, error in c.stream_infer(requests(), stream_timeout=60):
                    if error is not None:
                        failures.append(error)
                        continue
                    model, x = sent[result.get_response().id]
                    check(model, x, result.as_numpy("output"))

        async def watch_memory() -> None:
            while not done.is_set():
                metrics = await asyncio.to_thread(scrape, metrics_port)
                peaks.append(total(metrics, "maas_inference_memory_bytes"))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_memory())
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(unary(k) for k in range(12)), streamed()), 120)
        finally:
            done.set()
            await watcher
        elapsed = time.monotonic() - started

        assert failures == [], failures[:3]
        assert len(answered) == 12 * 30 + 36
        assert set(answered) == set(names)
        assert peaks and max(peaks) <= limit, (max(peaks), limit)
        metrics = scrape(metrics_port)
        assert total(metrics, "maas_inference_memory_limit_bytes") == limit
        assert total(metrics, "maas_inference_memory_bytes") <= limit
        evictions = total(metrics, "maas_inference_evictions")
        cold = total(metrics, "maas_inference_load_duration_seconds_count", cold="true")
        assert evictions >= MODELS - HOLDS and cold >= MODELS - HOLDS, (evictions, cold)
        successes = total(metrics, "nv_inference_request_success")
        assert successes == len(answered)
        with tc.InferenceServerClient(proc.address) as client:
            index = client.get_model_repository_index(as_json=True)["models"]
        ready = [m for m in index if m.get("state") == "READY"]
        evicted = [m for m in index if "evicted" in m.get("reason", "")]
        assert 1 <= len(ready) <= HOLDS and evicted, index
        assert all("its last load took" in m["reason"] for m in evicted)
        print(f"\n{len(answered)} answers over {MODELS} models in {elapsed:.1f}s; {evictions:.0f} evictions")
    finally:
        proc.stop()
    assert "evicted (least recently used" in proc.log()


def onnx_slow(trips: int, width: int = 64) -> bytes:
    """output = input + trips, one addition per Loop iteration: slow on purpose, FP32 [1, width] (not batched)."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Add", ["y_in", "one"], ["y_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_in", TensorProto.FLOAT, [1, width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_out", TensorProto.FLOAT, [1, width]),
        ],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "input"], ["output"], body=body)],
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width])],
        initializer=[
            numpy_helper.from_array(np.array(trips, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    return support.onnx_bytes(graph)


SLOW_SIGNATURE = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 64]}],
}
TRIPS = 20_000


async def test_an_evicted_version_finishes_its_requests_and_one_too_large_is_refused(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient
) -> None:
    slow = onnx_slow(TRIPS)
    support.register_onnx(registry, "slow", slow, SLOW_SIGNATURE)
    fast, weight, bias = support.onnx_dense(seed=100)
    support.register_onnx(registry, "fast", fast, support.dense_signature())
    huge, _, _ = support.onnx_dense(seed=101, outputs=1024)
    support.register_onnx(registry, "huge", huge, support.dense_signature(outputs=1024))
    limit = max(len(slow), len(fast)) + min(len(slow), len(fast)) // 2  # one of them at a time
    proc = support.start_inference(registry_process.address, workdir / "drain", models="slow,fast", memory_limit=limit)
    try:
        async with tca.InferenceServerClient(proc.address) as c:

            async def ask(model: str, x: np.ndarray) -> tuple[np.ndarray, float]:
                tensor = tca.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = await c.infer(model, [tensor], client_timeout=60)
                out = result.as_numpy("output")
                assert out is not None
                return out, time.monotonic()

            x = np.arange(64, dtype=np.float32).reshape(1, 64)
            await ask("slow", x)  # slow is the one loaded (configured first or not, it is now)
            # Four requests in flight on slow (one execution at a time), then one for fast: slow is evicted
            # while busy, and fast waits until slow has finished all four (its memory is slow's).
            busy = [asyncio.create_task(ask("slow", x + i)) for i in range(4)]
            await asyncio.sleep(0.05)
            (fast_out, fast_at), *slow_answers = await asyncio.gather(ask("fast", x), *busy)
            for i, (out, _) in enumerate(slow_answers):
                assert np.array_equal(out, x + i + TRIPS)
            assert np.allclose(fast_out, x @ weight + bias, rtol=1e-4, atol=1e-4)
            assert fast_at >= max(at for _, at in slow_answers)
            # And slow comes back on its next request.
            out, _ = await ask("slow", x)
            assert np.array_equal(out, x + TRIPS)

        with tc.InferenceServerClient(proc.address) as client:
            with pytest.raises(InferenceServerException) as refused:
                client.load_model("huge")
            assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert "memory limit" in refused.value.message()
            assert client.is_server_ready()
    finally:
        proc.stop()
    log = proc.log()
    assert "slow/1: evicted (least recently used" in log and "draining" in log


async def test_an_evicted_model_comes_back_from_the_cache_while_the_registry_is_down(workdir: Path) -> None:
    registry = support.start_registry(workdir / "down-registry")
    client = support.registry_client(registry.address)
    models = {}
    for i, name in enumerate(("left", "right")):
        graph, weight, bias = support.onnx_dense(seed=200 + i)
        support.register_onnx(client, name, graph, support.dense_signature())
        models[name] = (weight, bias, len(graph))
    client.close()
    size = max(s for _, _, s in models.values())
    proc = support.start_inference(
        registry.address, workdir / "down", models="left,right", memory_limit=size + size // 2
    )
    try:
        async with tca.InferenceServerClient(proc.address) as c:
            x = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32)
            tensor = tca.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)

            async def check(name: str) -> None:
                out = (await c.infer(name, [tensor], client_timeout=60)).as_numpy("output")
                weight, bias, _ = models[name]
                assert out is not None and np.allclose(out, x @ weight + bias, rtol=1e-4, atol=1e-4)

            await check("left")
            await check("right")  # evicts left
            registry.stop()
            await check("left")  # evicts right, and loads left again from the cache
            await check("right")
    finally:
        proc.stop()
        registry.stop()
    assert "registry unreachable" in proc.log() and "loading version 1 again" in proc.log()
