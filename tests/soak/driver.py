"""The soak: the whole suite under mixed load, watched from outside.

Run as its own process (it uses maas.client, whose inference stubs cannot
share a process with tritonclient): `python -m tests.soak.driver SECONDS OUT.json`.
It starts registry, trainer and inference as processes, registers three
versions of a model, and for SECONDS keeps four inference clients, a
registry reader, an alias move every SECONDS/10 (at least every 6 s), and a
training job whose watcher drops its stream every few seconds and resumes
from the last sequence number. Every 2 s it samples each service's RSS, open
file descriptors and threads from /proc. It writes what happened as JSON; the
test decides what is acceptable.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from maas.client import AsyncInference, AsyncRegistry, AsyncTrainer, errors
from maas.common.clients.base import ChannelConfig
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb
from tests.processes import start_service


def proc_stats(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


async def wait_serving(address: str, deadline: float = 180.0) -> None:
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + deadline
    async with aio.insecure_channel(address) as channel:
        while time.monotonic() < end:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{address} did not become SERVING")


def weights_file(directory: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    import torch
    from safetensors.torch import save_file

    from maas.common import catalog

    arch = catalog.parse({"name": "mlp", "args": {"hidden": [32], "num_classes": 10}, "input_shape": [1, 8, 8]})
    torch.manual_seed(seed)
    path = directory / f"w{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in catalog.build(arch).state_dict().items()}, str(path))
    return path, arch.to_dict()


async def run(seconds: float, out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="maas-soak-"))
    addresses: dict[str, str] = {}  # what each service printed once bound (every port is 0)
    env = {
        **os.environ,
        "MAAS_REGISTRY_PORT": "0",
        "MAAS_TRAINER_PORT": "0",
        "MAAS_INFERENCE_PORT": "0",
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_INFERENCE_METRICS_PORT": "0",
        "MAAS_INFERENCE_HTTP_PORT": "0",
        "MAAS_REGISTRY_DATA_DIR": str(work),
        "MAAS_TRAINER_DATA_DIR": str(work),
        "MAAS_INFERENCE_CACHE_DIR": str(work / "cache"),
        "MAAS_TRAINER_DEFAULT_THREADS": "1",
        "MAAS_INFERENCE_MODELS": "soak@production",
        "MAAS_INFERENCE_DRAIN_SECONDS": "5",
    }
    procs: dict[str, subprocess.Popen[str]] = {}

    def start(name: str) -> None:
        service = start_service(f"maas.{name}", env, work / f"{name}.log", timeout=180)
        procs[name], addresses[name] = service.proc, service.address

    report: dict[str, Any] = {"seconds": seconds, "samples": {}, "calls": {}, "errors": {}, "watch": {}}
    calls: dict[str, Counter[str]] = {k: Counter() for k in ("inference", "registry", "alias", "watch")}
    try:
        start("registry")
        await wait_serving(addresses["registry"])
        env["MAAS_TRAINER_REGISTRY_ADDRESS"] = env["MAAS_INFERENCE_REGISTRY_ADDRESS"] = addresses["registry"]
        registry = AsyncRegistry(ChannelConfig(addresses["registry"], timeout=10))
        await registry.create_model("soak")
        versions = []
        for seed in range(3):
            path, arch = weights_file(work, seed)
            signature = common_pb2.Signature(
                inputs=[common_pb2.TensorSpec(name="input", datatype=common_pb2.DATA_TYPE_FP32, shape=[-1, 1, 8, 8])],
                outputs=[common_pb2.TensorSpec(name="logits", datatype=common_pb2.DATA_TYPE_FP32, shape=[-1, 10])],
            )
            v = await registry.create_version(
                "soak", format=rpb.MODEL_FORMAT_SAFETENSORS, architecture=arch, signature=signature
            )
            await registry.upload_artifact("soak", v.version, path)
            versions.append(v.version)
        await registry.set_alias("soak", "production", versions[0])
        start("trainer")
        start("inference")
        await wait_serving(addresses["trainer"])
        await wait_serving(addresses["inference"])
        inference = AsyncInference(ChannelConfig(addresses["inference"], timeout=10))
        trainer = AsyncTrainer(ChannelConfig(addresses["trainer"], timeout=10))
        for _ in range(100):
            if await inference.model_ready("soak"):
                break
            await asyncio.sleep(0.2)

        stop_at = time.monotonic() + seconds
        samples: dict[str, list[dict[str, int]]] = {name: [] for name in procs}

        async def sampler() -> None:
            while time.monotonic() < stop_at:
                for name, proc in procs.items():
                    samples[name].append({"t": int(time.monotonic() * 1000), **proc_stats(proc.pid)})
                await asyncio.sleep(2)

        async def infer_loop(index: int) -> None:
            rng = np.random.default_rng(index)
            while time.monotonic() < stop_at:
                x = rng.uniform(0, 16, (1 + index, 1, 8, 8)).astype(np.float32)
                try:
                    result = await inference.infer("soak", {"input": x})
                    assert result.outputs["logits"].shape == (1 + index, 10)
                    calls["inference"]["OK"] += 1
                except errors.MaasError as exc:
                    calls["inference"][type(exc).__name__] += 1

        async def registry_loop() -> None:
            while time.monotonic() < stop_at:
                try:
                    await registry.get_model("soak")
                    await registry.resolve("soak@production")
                    await registry.list_versions(
                        __import__("maas.v1.registry_pb2", fromlist=["x"]).ListVersionsRequest(model="soak")
                    )
                    calls["registry"]["OK"] += 3
                except errors.MaasError as exc:
                    calls["registry"][type(exc).__name__] += 1
                await asyncio.sleep(0.05)

        async def alias_loop() -> None:
            interval = max(6.0, seconds / 10)
            position = 0
            while time.monotonic() + interval < stop_at:
                await asyncio.sleep(interval)
                position = (position + 1) % len(versions)
                try:
                    await registry.set_alias("soak", "production", versions[position])
                    calls["alias"]["OK"] += 1
                except errors.MaasError as exc:
                    calls["alias"][type(exc).__name__] += 1

        async def watch_loop() -> None:
            """A training job watched by a client that keeps losing its stream."""
            seqs: list[int] = []
            reconnects = 0
            jobs = 0
            while time.monotonic() < stop_at:
                job = await trainer.submit(
                    {
                        "model": {"name": "mlp"},
                        "dataset": {"name": "digits"},
                        "epochs": 40,
                        "batch_size": 16,
                        "register_as": "soak-trained",
                    }
                )
                jobs += 1
                last, done = 0, False
                while not done and time.monotonic() < stop_at:
                    # Drop the stream on purpose after 1-4 s, whether or not events came (a loaded
                    # machine starts the worker late), and resume from `last`.
                    try:
                        async with asyncio.timeout(random.uniform(1.0, 4.0)):
                            async for event in trainer.watch(job.job_id, last):
                                seqs.append(event.seq)
                                last = event.seq
                                if event.WhichOneof("kind") == "state" and event.state.state in (3, 4, 5):
                                    done = True
                                    calls["watch"][f"job {event.state.state}"] += 1
                                    break
                    except TimeoutError:
                        pass
                    except errors.MaasError as exc:
                        calls["watch"][type(exc).__name__] += 1
                    reconnects += 1
                if not done:
                    await trainer.cancel(job.job_id)
            report["watch"] = {
                "jobs": jobs,
                "reconnects": reconnects,
                "events": len(seqs),
                "seqs_ok": _contiguous(seqs),
            }

        await asyncio.gather(sampler(), registry_loop(), alias_loop(), watch_loop(), *(infer_loop(i) for i in range(4)))
        report["samples"] = samples
        report["calls"] = {k: dict(v) for k, v in calls.items()}
        stats = await inference.statistics("soak")
        report["served_versions"] = sorted({s.version for s in stats.model_stats})
        await inference.close()
        await trainer.close()
        await registry.close()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                report.setdefault("exit_codes", {})[name] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                report.setdefault("exit_codes", {})[name] = "killed"
        out.write_text(json.dumps(report))


def _contiguous(seqs: list[int]) -> bool:
    """Per job the seqs run 1, 2, 3, ... without gap or repeat (a new job restarts at 1)."""
    expected = 1
    for seq in seqs:
        if seq == 1 and expected != 1:
            expected = 1
        if seq != expected:
            return False
        expected += 1
    return True


if __name__ == "__main__":
    asyncio.run(run(float(sys.argv[1]), Path(sys.argv[2])))
