"""Inference benchmark (`make bench-inference`): infer/s, p50 and p99 over gRPC.

Measures, in one run on this machine:
- the MLP 64->128->10 on [-1, 64] and the classic CIFAR CNN (lenet) on
  [-1, 3, 32, 32], served by `python -m maas.inference` with dynamic batching
  on, at concurrency 1, 8 and 32; at concurrency 1 also with batching off;
- the transport ceiling: the same server and request shapes with a model that
  does nothing (an ONNX Identity graph);
- the in-process torch ceiling: the same network and thread count called in a
  loop at batch 1, 8 and 32.

The load generator is perf_analyzer when one is on the PATH; otherwise ours:
several processes, each sending one ModelInferRequest serialized once (with
tritonclient's generated message) as raw bytes through generic calls on a raw
grpc.aio channel - no per-call serialization or parsing - from `concurrency`
asyncio tasks spread over the processes, by default one connection per task (local
subchannel pools): the kernel spreads connections over the serving processes
(SO_REUSEPORT) at random, and with only a few connections one process could
get most of the load.
It runs on the same cores as the server; its CPU time, and the server's, are
measured and reported per inference and as a share of the machine. Results go
to bench/out/inference.md and bench/out/inference.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.inference import support  # noqa: E402 - processes and models shared with the tests

OUT = ROOT / "bench" / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODELS = {
    # name: (registry model, input name, row shape, noop twin)
    "mlp": ("bench-mlp", "input", (64,), "bench-noop-mlp"),
    "cnn": ("bench-cnn", "input", (3, 32, 32), "bench-noop-cnn"),
}


@dataclass
class Result:
    scenario: str
    model: str
    concurrency: int
    batching: str
    requests: int
    errors: int
    seconds: float
    infer_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    loadgen_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------- load generator


MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


def request_bytes(model: str, input_name: str, shape: tuple[int, ...], seed: int) -> bytes:
    """One ModelInferRequest with a raw FP32 row, serialized once (as perf_analyzer prepares its inputs once)."""
    from tritonclient.grpc import service_pb2

    x = np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=[1, *shape])
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def _load_process(
    address: str,
    payload: bytes,
    tasks: int,
    channels: int,
    start_at: float,
    duration: float,
    streaming: bool,
    conn: Any,
) -> None:
    """Send `payload` from `tasks` asyncio tasks over `channels` connections; report latencies and CPU.

    Generic calls on a raw grpc.aio channel: the request goes out as the bytes
    serialized once, and the response is not parsed (a unary call succeeded
    or raised; a stream answer whose first field is error_message - tag 0x0a -
    is an error). That is the least CPU a Python client can spend per call.
    """
    import grpc

    async def main() -> tuple[list[float], int, float]:
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
        chans = [grpc.aio.insecure_channel(address, options=options) for _ in range(channels)]
        unary = [c.unary_unary(MODEL_INFER) for c in chans]
        stream = [c.stream_stream(MODEL_STREAM_INFER) for c in chans]
        for call in unary:  # connect and warm every connection before the clock starts
            await call(payload)
        latencies: list[float] = []
        errors = 0
        end = start_at + duration
        now = time.time

        async def run_unary(k: int) -> None:
            nonlocal errors
            call = unary[k % channels]
            while (t0 := now()) < end:
                try:
                    await call(payload)
                except grpc.RpcError:
                    errors += t0 >= start_at
                    continue
                if t0 >= start_at:
                    latencies.append(now() - t0)

        async def run_stream(k: int) -> None:
            """One bidirectional stream per task, one request in flight on it (as perf_analyzer --streaming)."""
            nonlocal errors
            call = stream[k % channels]()
            try:
                while (t0 := now()) < end:
                    await call.write(payload)
                    answer = await call.read()
                    if answer[:1] == b"\x0a":
                        errors += t0 >= start_at
                    elif t0 >= start_at:
                        latencies.append(now() - t0)
            finally:
                await call.done_writing()

        cpu: list[float] = []

        async def cpu_window() -> None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            cpu.append(time.process_time())
            await asyncio.sleep(max(0.0, end - time.time()))
            cpu.append(time.process_time())

        run = run_stream if streaming else run_unary
        await asyncio.gather(cpu_window(), *(run(k) for k in range(tasks)))
        for c in chans:
            await c.close()
        return latencies, errors, cpu[1] - cpu[0]

    latencies, errors, cpu = asyncio.run(main())
    conn.send((latencies, errors, cpu))
    conn.close()


def _proc_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _server_pids(proc: support.Process) -> list[int]:
    pids = [proc.popen.pid]
    try:
        children = Path(f"/proc/{proc.popen.pid}/task/{proc.popen.pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    return pids


def measure(
    proc: support.Process,
    scenario: str,
    model_key: str,
    model: str,
    concurrency: int,
    batching: str,
    *,
    duration: float,
    warmup: float,
    loadgen_processes: int,
    channels: int = 0,
    streaming: bool = False,
) -> Result:
    _, input_name, shape, _ = MODELS[model_key]
    procs = max(1, min(loadgen_processes, concurrency))
    payload = request_bytes(model, input_name, shape, seed=concurrency)
    ctx = mp.get_context("spawn")
    start_at = time.time() + warmup + 2.0  # spawning and importing take a moment
    workers = []
    for i in range(procs):
        tasks = concurrency // procs + (1 if i < concurrency % procs else 0)
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=_load_process,
            args=(
                proc.address,
                payload,
                tasks,
                max(1, min(tasks, channels or tasks)),
                start_at,
                duration,
                streaming,
                child,
            ),
        )
        p.start()
        workers.append((p, parent))
    pids = _server_pids(proc)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = _proc_cpu(pids)
    time.sleep(duration)
    cpu1 = _proc_cpu(pids)
    latencies: list[float] = []
    errors = 0
    loadgen_cpu = 0.0
    for p, parent in workers:
        lat, err, cpu = parent.recv()
        latencies += lat
        errors += err
        loadgen_cpu += cpu
        p.join(30)
    lat_ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return Result(
        scenario=scenario,
        model=model_key,
        concurrency=concurrency,
        batching=batching,
        requests=len(latencies),
        errors=errors,
        seconds=duration,
        infer_per_s=len(latencies) / duration,
        p50_ms=float(np.percentile(lat_ms, 50)),
        p99_ms=float(np.percentile(lat_ms, 99)),
        server_cpu_s=cpu1 - cpu0,
        loadgen_cpu_s=loadgen_cpu,
    )


def perf_analyzer(
    proc: support.Process,
    scenario: str,
    model_key: str,
    model: str,
    concurrency: int,
    batching: str,
    duration: float,
    streaming: bool,
) -> Result:
    """One perf_analyzer measurement (used when the binary is on the PATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "pa.csv"
        cmd = [
            "perf_analyzer", "-m", model, "-u", proc.address, "-i", "grpc", "-b", "1",
            "--concurrency-range", str(concurrency), "--measurement-interval", str(int(duration * 1000)),
            "--percentile", "99", "-f", str(csv), *(["--streaming"] if streaming else []),
        ]  # fmt: skip
        pids = _server_pids(proc)
        cpu0 = _proc_cpu(pids)
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        cpu1 = _proc_cpu(pids)
        header, row = csv.read_text().splitlines()[:2]
        values = dict(zip(header.split(","), row.split(","), strict=False))
    return Result(
        scenario=scenario,
        model=model_key,
        concurrency=concurrency,
        batching=batching,
        requests=0,
        errors=0,
        seconds=duration,
        infer_per_s=float(values["Inferences/Second"]),
        p50_ms=float(values.get("p50 latency", "nan")) / 1000,
        p99_ms=float(values.get("p99 latency", "nan")) / 1000,
        server_cpu_s=cpu1 - cpu0,
        loadgen_cpu_s=float("nan"),
        extra={"note": "server CPU includes perf_analyzer's own warm-up windows"},
    )


# ------------------------------------------------------------ torch ceiling


def torch_ceiling(module: Any, shape: tuple[int, ...], batch: int, threads: int, seconds: float = 2.0) -> Result:
    import torch

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32))
    with torch.inference_mode():
        for _ in range(20):
            module(x)
        times = []
        end = time.perf_counter() + seconds
        while (t0 := time.perf_counter()) < end:
            module(x)
            times.append(time.perf_counter() - t0)
    lat = np.array(times) * 1000
    return Result(
        scenario="torch in-process",
        model="",
        concurrency=0,
        batching=f"batch {batch}",
        requests=len(times) * batch,
        errors=0,
        seconds=float(sum(times)),
        infer_per_s=len(times) * batch / sum(times),
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
        server_cpu_s=float("nan"),
        loadgen_cpu_s=float("nan"),
        extra={"batch": batch, "threads": threads},
    )


# ------------------------------------------------------------------- report


def _per(cpu_s: float, r: Result) -> str:
    if not r.requests or cpu_s != cpu_s:  # nan
        return ""
    return f"{cpu_s / r.requests * 1e6:,.0f}"


def _share(cpu_s: float, r: Result) -> str:
    """CPU time as a share of the whole machine (all cores) over the window."""
    if not r.requests or cpu_s != cpu_s:  # nan
        return ""
    return f"{cpu_s / r.seconds / (os.cpu_count() or 1) * 100:.0f}"


def report(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# Inference benchmark",
        "",
        f"Measured {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs); load average (1/5/15 min) "
        f"{meta['load_before']} before, {meta['load_after']} after.",
        f"Load generator: {meta['loadgen']}. Server: {meta['server']}.",
        f"Each gRPC figure is a {meta['duration']:.0f} s window after a {meta['warmup']:.0f} s warm-up.",
        "",
        "| scenario | model | concurrency | batching | infer/s | p50 ms | p99 ms | errors "
        "| server CPU us/infer | loadgen CPU us/infer | server CPU % | loadgen CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.model} | {r.concurrency or ''} | {r.batching} | {r.infer_per_s:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {_per(r.server_cpu_s, r)} | {_per(r.loadgen_cpu_s, r)} | "
            f"{_share(r.server_cpu_s, r)} | {_share(r.loadgen_cpu_s, r)} |"
        )
    lines += ["", "## Goals", ""]
    lines += [f"- {g}" for g in meta["goals"]]
    return "\n".join(lines) + "\n"


def goals(results: list[Result]) -> list[str]:
    def find(scenario: str, model: str, c: int, batching: str = "on") -> Result | None:
        for r in results:
            if r.scenario == scenario and r.model == model and r.concurrency == c and r.batching == batching:
                return r
        return None

    out = []
    for (model, target), rpc in itertools.product((("mlp", 4000), ("cnn", 3000)), ("", " (stream)")):
        served = find(f"served{rpc}", model, 32)
        noop = find(f"transport ceiling{rpc}", model, 32, "on")
        if served:
            ratio = served.infer_per_s / noop.infer_per_s if noop else float("nan")
            out.append(
                f"{model}{rpc} at concurrency 32: {served.infer_per_s:,.0f} infer/s (goal >= {target:,}: "
                f"{'met' if served.infer_per_s >= target else 'NOT met'}), p99 {served.p99_ms:.1f} ms "
                f"(goal < 20: {'met' if served.p99_ms < 20 else 'NOT met'}), {ratio:.2f} of the transport ceiling "
                f"(goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
            )
        on, off = find(f"served{rpc}", model, 1), find(f"served{rpc}", model, 1, "off")
        if on and off:
            ratio = on.p50_ms / off.p50_ms
            out.append(
                f"{model}{rpc} at concurrency 1: p50 {on.p50_ms:.2f} ms with batching, {off.p50_ms:.2f} ms without: "
                f"{ratio:.2f}x (goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})"
            )
    return out


# --------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per point")
    parser.add_argument("--workers", type=int, default=2, help="serving processes sharing the port")
    parser.add_argument("--loadgen-processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--channels",
        type=int,
        default=0,
        help="connections per load generator process (0: one per task, so SO_REUSEPORT spreads the load evenly "
        "over the serving processes)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per execution")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="mlp,cnn")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    models = args.models.split(",")
    use_pa = shutil.which("perf_analyzer") is not None
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="maas-bench-inference-"))
    results: list[Result] = []
    registry = support.start_registry(work / "registry")
    client = support.registry_client(registry.address)
    modules = {
        "mlp": support.register_torch(client, "bench-mlp", support.MLP_ARCH, seed=1)[1],
        "cnn": support.register_torch(client, "bench-cnn", support.LENET_ARCH, seed=2)[1],
    }
    support.register_onnx(client, "bench-noop-mlp", support.onnx_identity(64), support.IDENTITY_SIGNATURE)
    support.register_onnx(client, "bench-noop-cnn", support.onnx_identity_image(), support.IDENTITY_IMAGE_SIGNATURE)
    client.close()
    all_models = ",".join(["bench-mlp", "bench-cnn", "bench-noop-mlp", "bench-noop-cnn"])
    common = {"workers": args.workers, "intra_op_threads": args.threads, "log_level": "WARNING"}

    def run(proc: support.Process, scenario: str, key: str, model: str, c: int, batching: str) -> None:
        streaming = scenario.endswith("(stream)")
        if use_pa:
            r = perf_analyzer(proc, scenario, key, model, c, batching, args.duration, streaming)
        else:
            r = measure(
                proc, scenario, key, model, c, batching,
                duration=args.duration, warmup=args.warmup, loadgen_processes=args.loadgen_processes,
                channels=args.channels, streaming=streaming,
            )  # fmt: skip
        print(
            f"{scenario:18s} {key:4s} c={c:<3d} batching={batching:3s} {r.infer_per_s:8.0f}/s "
            f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms errors {r.errors} "
            f"cpu server {r.server_cpu_s:.2f}s loadgen {r.loadgen_cpu_s:.2f}s",
            flush=True,
        )
        results.append(r)

    try:
        # Both servers run throughout (the idle one costs nothing) so that each batching-off
        # figure is measured right after its batching-on twin, under the same outside load.
        on = support.start_inference(registry.address, work / "on", models=all_models, **common)
        try:
            off = support.start_inference(
                registry.address, work / "off", models=all_models, dynamic_batching="false", **common
            )
            try:
                for key in models:
                    for rpc in ("", " (stream)"):
                        for c in concurrencies:
                            run(on, f"served{rpc}", key, MODELS[key][0], c, "on")
                            if c in (1, 32):
                                run(off, f"served{rpc}", key, MODELS[key][0], c, "off")
                            run(on, f"transport ceiling{rpc}", key, MODELS[key][3], c, "on")
            finally:
                off.stop()
        finally:
            on.stop()
        for key in models:
            for batch in (1, 8, 32):
                r = torch_ceiling(modules[key], MODELS[key][2], batch, args.threads)
                r.model = key
                print(f"torch in-process   {key:4s} batch {batch:<3d} {r.infer_per_s:8.0f} rows/s", flush=True)
                results.append(r)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadgen": "perf_analyzer"
        if use_pa
        else (
            f"ours ({args.loadgen_processes} processes, {args.channels or 'one connection per task,'} "
            f"{'connections each, ' if args.channels else ''}request serialized once "
            "with tritonclient's message and sent as bytes through generic calls on a raw grpc.aio channel; "
            "not perf_analyzer: none on the PATH)"
        ),
        "server": f"python -m maas.inference, {args.workers} worker process(es), {args.threads} intra-op thread(s)",
        "duration": args.duration,
        "warmup": args.warmup,
        "load_before": load_before,
        "load_after": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    meta["goals"] = goals(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "inference.json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    (OUT / "inference.md").write_text(report(results, meta))
    print(report(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
