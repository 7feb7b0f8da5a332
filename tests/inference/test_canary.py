"""A canary and a shadow through real processes: one registry (SQLite, PostgreSQL), two inference replicas (14.3).

A deployment `digits` splits 90/10 between digits@production (version 1) and
digits/2, with a shadow, digits/3, that fails on every request it is sent
(a Gather past its table for the inputs the callers send; it loads and warms
on small inputs). Callers use tritonclient with a request id: the version
named in each response is the one whose numbers came back, the share lands
within the stated tolerance, an id lands on the same version on either
replica, the failing shadow changes no answer and no caller's p99 beyond the
stated bound (against a deployment of the same split without a shadow,
interleaved), and `maas deployments promote` moves every request to the
canary.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from prometheus_client.parser import text_string_to_metric_families

from maas.common.clients.registry import BlockingRegistryClient
from maas.v1 import registry_pb2 as rpb
from tests.cli.support import maas
from tests.helpers import unused_port
from tests.inference import support
from tests.inference.test_late_models import eventually

WIDTH, OUTPUTS = 8, 4
X = (100 + np.random.default_rng(14).standard_normal((1, WIDTH))).astype(np.float32)  # values ~100
REQUESTS = 2000
TOLERANCE = 0.03  # the canary's share of 2,000 requests is within 3 points of 10%
P99_BOUND = 0.100  # a failing shadow (its work shares the 2 cores) adds less than 100 ms to a caller's p99


def failing_graph() -> bytes:
    """FP32 [-1, WIDTH] -> [-1, OUTPUTS] that fails for inputs above 50: the index relu(x - 50) passes its table."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Sub", ["input", "fifty"], ["shifted"]),
        helper.make_node("Relu", ["shifted"], ["over"]),
        helper.make_node("Cast", ["over"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["rows"], axis=0),
        helper.make_node("ReduceSum", ["rows", "axes"], ["output"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "fails_above_50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", OUTPUTS])],
        initializer=[
            numpy_helper.from_array(np.array(50, np.float32), "fifty"),
            numpy_helper.from_array(np.ones((1, OUTPUTS), np.float32), "table"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    return support.onnx_bytes(graph)


def metrics(port: int) -> Callable[..., float]:
    """The replica's /metrics now: a sum of one sample's values over the labels given."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    return total


def infer(client: tc.InferenceServerClient, name: str, request_id: str) -> tuple[str, np.ndarray]:
    tensor = tc.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(name, [tensor], request_id=request_id)
    return result.get_response().model_version, result.as_numpy("output")


def infer_all(addresses: Sequence[str], name: str, ids: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Each id once, spread over the replicas in turn, 16 requests in flight."""

    async def run() -> list[tuple[str, np.ndarray]]:
        clients = [tca.InferenceServerClient(a) for a in addresses]
        room = asyncio.Semaphore(16)

        async def one(i: int, request_id: str) -> tuple[str, np.ndarray]:
            tensor = tca.InferInput("input", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X)
            async with room:
                result = await clients[i % len(clients)].infer(name, [tensor], request_id=request_id)
            return result.get_response().model_version, result.as_numpy("output")

        try:
            return await asyncio.gather(*(one(i, request_id) for i, request_id in enumerate(ids)))
        finally:
            for client in clients:
                await client.close()

    return asyncio.run(run())


def serving(registry: BlockingRegistryClient, name: str, generation: int, replicas: int) -> bool:
    """Every replica reports `generation` of the deployment, each target and the shadow READY."""
    reports = registry.get_deployment(name).replicas
    return len(reports) == replicas and all(
        r.generation == generation and r.targets and all(t.state == rpb.TARGET_STATE_READY for t in r.targets)
        for r in reports
    )


def test_a_90_10_canary_with_a_failing_shadow_on_two_replicas(
    tmp_path: Path, db_registry_process: support.Process, db_registry: BlockingRegistryClient
) -> None:
    registry_proc, registry = db_registry_process, db_registry
    expected: dict[str, Any] = {}
    for seed in (1, 2):
        graph, weight, bias = support.onnx_dense(seed, WIDTH, OUTPUTS)
        version = support.register_onnx(
            registry,
            "digits",
            graph,
            support.dense_signature(WIDTH, OUTPUTS),
            alias="production" if seed == 1 else None,
        )
        expected[str(version)] = X @ weight + bias
    shadow = support.register_onnx(registry, "digits", failing_graph(), support.dense_signature(WIDTH, OUTPUTS), None)
    split = [rpb.DeploymentTarget(ref="digits@production", weight=90), rpb.DeploymentTarget(ref="digits/2", weight=10)]
    registry.create_deployment(
        "digits", rpb.DeploymentSpec(targets=split, shadow=rpb.ShadowTarget(ref=f"digits/{shadow}", sample_percent=100))
    )
    registry.create_deployment("plain", rpb.DeploymentSpec(targets=split))  # the same split, no shadow

    ports = [unused_port(), unused_port()]
    with ThreadPoolExecutor(2) as pool:  # both start at once
        replicas = list(
            pool.map(
                lambda i: support.start_inference(
                    registry_proc.address,
                    tmp_path / f"canary-{i}",
                    replica_id=f"canary-{i}",
                    metrics_port=ports[i],
                    http="false",
                ),
                range(2),
            )
        )
    clients = [tc.InferenceServerClient(r.address) for r in replicas]
    try:
        eventually(lambda: serving(registry, "digits", 1, 2) and serving(registry, "plain", 1, 2), "both converged")

        # 2,000 requests with ids, half on each replica: each answer is the numbers of the version it names.
        ids = [f"id-{i}" for i in range(REQUESTS)]
        answered: dict[str, str] = {}
        for request_id, (by, out) in zip(ids, infer_all([r.address for r in replicas], "digits", ids), strict=True):
            np.testing.assert_allclose(out, expected[by], rtol=1e-5)  # the shadow changed nothing
            answered[request_id] = by
        share = Counter(answered.values())["2"] / REQUESTS
        print(f"the canary answered {share:.1%} of {REQUESTS} requests")
        assert abs(share - 0.10) <= TOLERANCE, share
        assert set(answered.values()) == {"1", "2"}
        # A retry of an id lands on the same version, on either replica.
        for first, other in ((0, 1), (1, 0)):  # ids first sent to one replica (every other id), again on the other
            retried = ids[first::10]
            again = infer_all([replicas[other].address], "digits", retried)
            assert [by for by, _ in again] == [answered[i] for i in retried]

        # Every copy went to the shadow and failed there (or, past the bound in flight, was dropped): counted
        # per answering version on each replica.
        def copies() -> float:
            return sum(
                metrics(p)("maas_inference_shadow_requests_total", model="digits", outcome=outcome)
                for p in ports
                for outcome in ("failed", "dropped")
            )

        eventually(lambda: copies() == REQUESTS + REQUESTS // 5, "every copy counted")
        m = metrics(ports[0])
        assert m("maas_inference_shadow_requests_total", model="digits", outcome="agree") == 0
        assert m("maas_inference_shadow_requests_total", model="digits", version="2", outcome="failed") > 0
        # Statistics per version: the canary's successes, the shadow's failures, each under its version.
        assert m("nv_inference_request_success", model="digits", version="2") > 0
        assert m("nv_inference_request_failure", model="digits", version=str(shadow)) > 0
        assert m("nv_inference_request_success", model="digits", version=str(shadow)) == 0

        # The caller's p99 with the failing shadow against the same split without one, interleaved.
        timings: dict[str, list[float]] = {"digits": [], "plain": []}
        for i in range(200):
            for name in timings:
                start = time.perf_counter()
                infer(clients[0], name, f"p-{i}")
                timings[name].append(time.perf_counter() - start)
        p99 = {name: float(np.percentile(t, 99)) for name, t in timings.items()}
        print(f"caller p99 over 200 requests each, failing shadow vs none: {p99}")
        assert p99["digits"] < p99["plain"] + P99_BOUND, p99

        # Promotion: one command, and every request goes to the canary on both replicas.
        env = {"MAAS_REGISTRY_ADDRESS": registry_proc.address, "MAAS_TIMEOUT": "30"}
        promoted = maas("deployments", "promote", "digits", env=env, timeout=60)
        assert promoted.rc == 0, promoted.stderr
        eventually(lambda: serving(registry, "digits", 2, 2), "the promotion reached both replicas")
        assert {infer(clients[i % 2], "digits", f"id-{i}")[0] for i in range(100)} == {"2"}
    finally:
        for client in clients:
            client.close()
        for replica in replicas:
            replica.stop()
