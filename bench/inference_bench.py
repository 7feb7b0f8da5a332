"""Inference benchmark (`make bench-inference`): infer/s, p50 and p99 over gRPC.

Measures, in one run on this machine:
- the MLP 64->128->10 on [-1, 64] and the classic CIFAR CNN (lenet) on
  [-1, 3, 32, 32], served by `python -m maas.inference` with dynamic batching
  on, at concurrency 1, 8 and 32; at concurrency 1 also with batching off;
- the transport ceiling: the same server and request shapes with a model that
  does nothing (an ONNX Identity graph);
- the in-process torch ceiling: the same network and thread count called in a
  loop at batch 1, 8 and 32.

The load generator (bench/grpcload.py, shared with bench/formats_bench.py) is
perf_analyzer when one is on the PATH (its PyPI wheels need glibc 2.38; this
machine has 2.36). Otherwise ours, in C++
(bench/loadgen/loadgen.cc, built here into bench/out/loadgen from Debian's
libgrpc++-dev, installed with apt-get when missing): one ModelInferRequest
serialized once by this script (with tritonclient's message) and sent as bytes
through grpc::GenericStub, closed loop at `concurrency` over one connection per
slot (so SO_REUSEPORT spreads them over the serving processes), unary
ModelInfer or one ModelStreamInfer stream per slot with one request in flight
(as perf_analyzer --streaming); latencies of the requests completed in a fixed
window after a warm-up, non-OK statuses and in-stream error_messages counted,
its own CPU time and the server's read at the window's edges. When it cannot
be built, the Python load generator below stands in (several processes
sending the same bytes through generic calls on raw grpc.aio channels), at
several times its CPU cost per request.
Either runs on the same cores as the server; its CPU time, and the server's,
are reported per inference and as a share of the machine. Results go to
bench/out/inference.md and bench/out/inference.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grpcload import (  # noqa: E402
    LoadGenerator,
    Result,
    json_safe,
    load_average,
    other_share,
    request_bytes,
    run_meta,
    wait_for_quiet,
)
from tests.inference import support  # noqa: E402 - processes and models shared with the tests

OUT = ROOT / "bench" / "out"

MODELS = {
    # name: (registry model, input name, row shape, noop twin)
    "mlp": ("bench-mlp", "input", (64,), "bench-noop-mlp"),
    "cnn": ("bench-cnn", "input", (3, 32, 32), "bench-noop-cnn"),
}


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


def _ms(value: Any) -> str:
    return "" if value is None or value != value else f"{float(value):.2f}"


def report(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# Inference benchmark",
        "",
        f"Measured {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs); load average (1/5/15 min) "
        f"{meta['load_before']} before, {meta['load_after']} after.",
        f"Load generator: {meta['loadgen']}. Server: {meta['server']}.",
        f"Each gRPC figure is a {meta['duration']:.0f} s window after a {meta['warmup']:.0f} s warm-up; "
        f"{meta.get('quiet', '')}. CPU % columns are shares of all cores over the window; 'other' is what the "
        "rest of the machine used meanwhile (busy CPU time from /proc/stat less server and load generator).",
        "",
        "| scenario | model | concurrency | batching | infer/s | p50 ms | p90 ms | p99 ms | errors "
        "| server CPU us/infer | loadgen CPU us/infer | server CPU % | loadgen CPU % | other CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.model} | {r.concurrency or ''} | {r.batching} | {r.infer_per_s:,.0f} | "
            f"{_ms(r.p50_ms)} | {_ms(r.extra.get('p90_ms'))} | {_ms(r.p99_ms)} | {r.errors} | "
            f"{_per(r.server_cpu_s, r)} | {_per(r.loadgen_cpu_s, r)} | "
            f"{_share(r.server_cpu_s, r)} | {_share(r.loadgen_cpu_s, r)} | {other_share(r)} |"
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
            if noop and noop.infer_per_s:
                ratio = served.infer_per_s / noop.infer_per_s
                ceiling = f"{ratio:.2f} of the transport ceiling (goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
            else:
                ceiling = "transport ceiling not measured"
            out.append(
                f"{model}{rpc} at concurrency 32: {served.infer_per_s:,.0f} infer/s (goal >= {target:,}: "
                f"{'met' if served.infer_per_s >= target else 'NOT met'}), p99 {served.p99_ms:.1f} ms "
                f"(goal < 20: {'met' if served.p99_ms < 20 else 'NOT met'}), {ceiling}"
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
    parser.add_argument("--instances", type=int, default=1, help="executions of one model at once (per worker)")
    parser.add_argument("--queue-delay-us", type=int, default=None, help="max queue delay (default: the server's)")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "cpp", "python"),
        default="auto",
        help="auto: perf_analyzer when on the PATH, else ours in C++, else ours in Python",
    )
    parser.add_argument("--loadgen-threads", type=int, default=1, help="completion-queue threads of the C++ one")
    parser.add_argument("--loadgen-processes", type=int, default=2, help="processes of the Python load generator")
    parser.add_argument(
        "--channels",
        type=int,
        default=0,
        help="connections per load generator (process) (0: one per concurrent request, so SO_REUSEPORT spreads "
        "the load evenly over the serving processes)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per execution")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--rpcs", default="unary,stream", help="unary, stream or both")
    parser.add_argument(
        "--scenarios", default="served,off,ceiling,torch", help="which of: served, off (batching off), ceiling, torch"
    )
    parser.add_argument("--quiet-load", type=float, default=1.0, help="wait for a 1-min load average at most this")
    parser.add_argument("--quiet-patience", type=float, default=1200.0, help="seconds to wait for it at most")
    parser.add_argument("--out", default=str(OUT / "inference"), help="report path without extension")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    models = args.models.split(",")
    rpcs = [{"unary": "", "stream": " (stream)"}[r] for r in args.rpcs.split(",")]
    scenarios = set(args.scenarios.split(","))

    try:
        loadgen = LoadGenerator.pick(
            args.loadgen, threads=args.loadgen_threads, processes=args.loadgen_processes, channels=args.channels
        )
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"load generator: {loadgen.description}", flush=True)
    quiet = wait_for_quiet(args.quiet_load, args.quiet_patience)
    print(quiet, flush=True)
    load_before = load_average()
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
    common: dict[str, Any] = {
        "workers": args.workers,
        "intra_op_threads": args.threads,
        "instances": args.instances,
        "log_level": "WARNING",
    }
    if args.queue_delay_us is not None:
        common["max_queue_delay_us"] = args.queue_delay_us

    def run(proc: support.Process, scenario: str, key: str, model: str, c: int, batching: str) -> None:
        streaming = scenario.endswith("(stream)")
        _, input_name, shape, _ = MODELS[key]
        payload = request_bytes(model, input_name, shape, seed=c)
        r = loadgen.measure(
            proc, scenario, key, model, payload, c, batching,
            duration=args.duration, warmup=args.warmup, streaming=streaming,
        )  # fmt: skip
        r.extra["load_1min"] = os.getloadavg()[0]
        print(
            f"{scenario:24s} {key:4s} c={c:<3d} batching={batching:3s} {r.infer_per_s:8.0f}/s "
            f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms errors {r.errors} "
            f"cpu server {r.server_cpu_s:.2f}s loadgen {r.loadgen_cpu_s:.2f}s other {other_share(r)}",
            flush=True,
        )
        results.append(r)

    try:
        # Both servers run throughout (the idle one costs nothing) so that each batching-off
        # figure is measured right after its batching-on twin, under the same outside load.
        on = support.start_inference(registry.address, work / "on", models=all_models, **common)
        try:
            off = None
            if "off" in scenarios:
                off = support.start_inference(
                    registry.address, work / "off", models=all_models, dynamic_batching="false", **common
                )
            try:
                for key in models:
                    for rpc in rpcs:
                        for c in concurrencies:
                            if "served" in scenarios:
                                run(on, f"served{rpc}", key, MODELS[key][0], c, "on")
                            if off is not None and c in (1, 32):
                                run(off, f"served{rpc}", key, MODELS[key][0], c, "off")
                            if "ceiling" in scenarios:
                                run(on, f"transport ceiling{rpc}", key, MODELS[key][3], c, "on")
            finally:
                if off is not None:
                    off.stop()
        finally:
            on.stop()
        if "torch" in scenarios:
            for key in models:
                for batch in (1, 8, 32):
                    r = torch_ceiling(modules[key], MODELS[key][2], batch, args.threads)
                    r.model = key
                    print(f"torch in-process   {key:4s} batch {batch:<3d} {r.infer_per_s:8.0f} rows/s", flush=True)
                    results.append(r)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    delay = f"max queue delay {args.queue_delay_us} us" if args.queue_delay_us is not None else "default queue delay"
    meta = {
        **run_meta(loadgen),
        "server": f"python -m maas.inference, {args.workers} worker process(es), {args.instances} instance(s), "
        f"{args.threads} intra-op thread(s), {delay}",
        "duration": args.duration,
        "warmup": args.warmup,
        "quiet": quiet,
        "load_before": load_before,
        "load_after": load_average(),
    }
    meta["goals"] = goals(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = json_safe({"meta": meta, "results": [asdict(r) for r in results]})
    out.with_suffix(".json").write_text(json.dumps(document, indent=2, allow_nan=False))
    out.with_suffix(".md").write_text(report(results, meta))
    print(report(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
