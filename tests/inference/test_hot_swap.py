"""Zero-downtime swaps when a followed alias moves, and serving through a registry outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support


async def test_hot_swap_under_8_clients_fails_nothing_and_never_goes_back(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient
) -> None:
    _, v1 = support.register_torch(registry, "swap", support.MLP_ARCH, seed=1)
    v2_number, v2 = support.register_torch(registry, "swap", support.MLP_ARCH, seed=2, alias=None)
    modules = {"1": v1, str(v2_number): v2}
    proc = support.start_inference(registry_process.address, workdir / "swap", models="swap@production")
    inputs = [np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32) for i in range(8)]
    min_rows = support.min_execution_rows(proc.address, "swap")  # v2 is the same network: the same size
    wanted = {
        (version, i): support.expected(m, x, min_rows) for version, m in modules.items() for i, x in enumerate(inputs)
    }
    seen: list[list[str]] = [[] for _ in range(8)]
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client(k: int) -> None:
        async with tca.InferenceServerClient(proc.address) as c:
            tensor = tca.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(inputs[k])
            while not stop.is_set():
                try:
                    result = await c.infer("swap", [tensor])
                except InferenceServerException as exc:
                    failures.append(exc)
                    continue
                version = result.get_response().model_version
                assert np.array_equal(result.as_numpy("logits"), wanted[(version, k)]), version
                seen[k].append(version)

    def count(version: str) -> int:
        return min(sum(1 for v in s if v == version) for s in seen)

    async def wait_for(condition: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out; seen {[s[-1:] for s in seen]}"
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(client(k)) for k in range(8)]
    try:
        await wait_for(lambda: count("1") >= 20, 60)
        await asyncio.to_thread(registry.set_alias, "swap", "production", v2_number)
        await wait_for(lambda: count(str(v2_number)) >= 20 or failures, 60)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        proc.stop()
    assert failures == []
    for versions in seen:
        changes = [i for i in range(1, len(versions)) if versions[i] != versions[i - 1]]
        assert versions[0] == "1" and len(changes) == 1, versions
    assert "drained and unloaded" in proc.log()


def test_serves_through_a_registry_outage_and_follows_after_it(workdir: Path) -> None:
    registry_dir = workdir / "outage-registry"
    registry = support.start_registry(registry_dir)
    port = int(registry.address.rpartition(":")[2])  # the restarted registry comes back on this one
    client = support.registry_client(registry.address)
    _, v1 = support.register_torch(client, "steady", support.MLP_ARCH, seed=5)
    client.close()
    proc = support.start_inference(registry.address, workdir / "outage", models="steady")
    triton = tc.InferenceServerClient(proc.address)
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    tensor = tc.InferInput("input", [1, 64], "FP32")
    tensor.set_data_from_numpy(x)
    min_rows = support.min_execution_rows(proc.address, "steady")
    try:
        registry.kill()
        for _ in range(20):
            result = triton.infer("steady", [tensor])
            assert np.array_equal(result.as_numpy("logits"), support.expected(v1, x, min_rows))
        assert triton.is_server_ready() and triton.is_model_ready("steady")

        registry = support.start_registry(registry_dir, port=port)
        client = support.registry_client(registry.address)
        v2_number, v2 = support.register_torch(client, "steady", support.MLP_ARCH, seed=6)
        client.close()
        deadline = time.monotonic() + 60
        while (result := triton.infer("steady", [tensor])).get_response().model_version != str(v2_number):
            assert result.get_response().model_version == "1"
            assert time.monotonic() < deadline, "the service did not follow the alias after the registry came back"
            time.sleep(0.1)
        assert np.array_equal(result.as_numpy("logits"), support.expected(v2, x, min_rows))
    finally:
        triton.close()
        proc.stop()
        registry.stop()
