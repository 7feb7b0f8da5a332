"""Inference benchmark (`make bench-inference`): infer/s, p50 and p99 over gRPC.

Measures, in one run on this machine:
- the MLP 64->128->10 on [-1, 64] and the classic CIFAR CNN (lenet) on
  [-1, 3, 32, 32], served by `python -m maas.inference` with dynamic batching
  on, at concurrency 1, 8 and 32; at concurrency 1 also with batching off;
- the transport ceiling: the same server and request shapes with a model that
  does nothing (an ONNX Identity graph);
- the in-process torch ceiling: the same network and thread count called in a
  loop at batch 1, 8 and 32.

The load generator is perf_analyzer when one is on the PATH (its PyPI wheels
need glibc 2.38; this machine has 2.36). Otherwise ours, in C++
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


# ------------------------------------------------------- C++ load generator

LOADGEN_SOURCE = ROOT / "bench" / "loadgen" / "loadgen.cc"
LOADGEN_BINARY = OUT / "loadgen"
LOADGEN_PACKAGES = ("g++", "pkg-config", "libgrpc++-dev", "libprotobuf-dev", "protobuf-compiler-grpc")


def _have_grpcpp() -> bool:
    return (
        shutil.which("g++") is not None
        and shutil.which("pkg-config") is not None
        and subprocess.run(["pkg-config", "--exists", "grpc++"], capture_output=True).returncode == 0
    )


def build_loadgen() -> tuple[Path | None, str]:
    """bench/out/loadgen, built when missing or older than its source; (None, why) when it cannot be."""
    if LOADGEN_BINARY.exists() and LOADGEN_BINARY.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return LOADGEN_BINARY, "built before"
    if not _have_grpcpp():
        # Like the Makefile's install-tools: Debian packages, when apt-get can install them.
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            return None, "gRPC C++ development files missing and apt-get not usable here"
        print(f"installing {' '.join(LOADGEN_PACKAGES)} (apt) for the C++ load generator", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *LOADGEN_PACKAGES]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if done.returncode != 0:
                return None, f"apt-get failed: {done.stderr.strip()[-300:]}"
        if not _have_grpcpp():
            return None, "gRPC C++ development files still missing after apt-get"
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True, check=True
    ).stdout.split()
    OUT.mkdir(parents=True, exist_ok=True)
    cmd = ["g++", "-O2", "-Wall", "-Wextra", "-std=c++17", "-o", str(LOADGEN_BINARY), str(LOADGEN_SOURCE), *flags]
    print("building the C++ load generator: " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        LOADGEN_BINARY.unlink(missing_ok=True)
        return None, f"g++ failed: {done.stderr.strip()[-500:]}"
    if done.stderr.strip():
        print(done.stderr, flush=True)  # warnings: there should be none
    return LOADGEN_BINARY, "built now"


def measure_cpp(
    binary: Path,
    proc: support.Process,
    scenario: str,
    model_key: str,
    model: str,
    concurrency: int,
    batching: str,
    *,
    duration: float,
    warmup: float,
    channels: int = 0,
    threads: int = 1,
    streaming: bool = False,
) -> Result:
    """One point with the C++ load generator; the server's CPU is read by it at the window's edges."""
    _, input_name, shape, _ = MODELS[model_key]
    payload = OUT / f"request-{model}.bin"
    payload.write_bytes(request_bytes(model, input_name, shape, seed=concurrency))
    cmd = [
        str(binary), "--target", proc.address, "--payload", str(payload), "--concurrency", str(concurrency),
        "--channels", str(channels or concurrency), "--threads", str(threads), "--warmup", str(warmup),
        "--duration", str(duration), "--watch-pids", ",".join(str(p) for p in _server_pids(proc)),
        *(["--streaming"] if streaming else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    requests = int(out["requests"])
    return Result(
        scenario=scenario,
        model=model_key,
        concurrency=concurrency,
        batching=batching,
        requests=requests,
        errors=int(out["errors"]),
        seconds=float(out["seconds"]),
        infer_per_s=float(out["infer_per_s"]),
        p50_ms=_num(out["p50_ms"]),
        p99_ms=_num(out["p99_ms"]),
        server_cpu_s=_num(out["watched_cpu_s"]),
        loadgen_cpu_s=_num(out["loadgen_cpu_s"]),
        extra={
            "p90_ms": out["p90_ms"],
            "mean_ms": out["mean_ms"],
            "error_samples": out["error_samples"],
            "machine_busy_cpu_s": out["machine_busy_cpu_s"],
            "machine_steal_cpu_s": out["machine_steal_cpu_s"],
        },
    )


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


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


def _other_share(r: Result) -> str:
    """CPU the rest of the machine used during the window (neither server nor load generator), % of all cores."""
    busy = r.extra.get("machine_busy_cpu_s")
    if busy is None or r.server_cpu_s != r.server_cpu_s or r.loadgen_cpu_s != r.loadgen_cpu_s or not r.seconds:
        return ""
    other = max(0.0, float(busy) - r.server_cpu_s - r.loadgen_cpu_s)
    return f"{other / r.seconds / (os.cpu_count() or 1) * 100:.0f}"


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
            f"{_share(r.server_cpu_s, r)} | {_share(r.loadgen_cpu_s, r)} | {_other_share(r)} |"
        )
    lines += ["", "## Goals", ""]
    lines += [f"- {g}" for g in meta["goals"]]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


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


def wait_for_quiet(threshold: float, patience: float) -> str:
    """Wait (up to `patience` seconds) for the 1-minute load average to drop to `threshold`; say how it went."""
    start = time.monotonic()
    while os.getloadavg()[0] > threshold and time.monotonic() - start < patience:
        time.sleep(10)
    load = os.getloadavg()[0]
    waited = time.monotonic() - start
    if load > threshold:
        return f"gave up waiting for a load average <= {threshold:g} after {waited:.0f} s (it was {load:.2f})"
    return f"waited {waited:.0f} s for a load average <= {threshold:g}" if waited > 1 else "machine quiet at start"


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

    use_pa = args.loadgen == "auto" and shutil.which("perf_analyzer") is not None
    binary: Path | None = None
    why = "not asked for"
    if not use_pa and args.loadgen in ("auto", "cpp"):
        binary, why = build_loadgen()
        if binary is None and args.loadgen == "cpp":
            print(f"the C++ load generator cannot be built: {why}", file=sys.stderr)
            return 1
    if use_pa:
        loadgen = "perf_analyzer"
    elif binary is not None:
        loadgen = (
            f"ours in C++ (bench/loadgen/loadgen.cc, grpc++ GenericStub, {args.loadgen_threads} completion-queue "
            f"thread(s), {args.channels or 'one'} connection(s)"
            f"{' in all' if args.channels else ' per concurrent request'}"
            ", the request serialized once with tritonclient's message; not perf_analyzer: none on the PATH)"
        )
    else:
        loadgen = (
            f"ours in Python, the fallback (the C++ one could not be built: {why}; {args.loadgen_processes} "
            f"processes, {args.channels or 'one connection per task,'} {'connections each, ' if args.channels else ''}"
            "request serialized once with tritonclient's message and sent as bytes through generic calls on a raw "
            "grpc.aio channel; not perf_analyzer: none on the PATH)"
        )
    print(f"load generator: {loadgen}", flush=True)
    quiet = wait_for_quiet(args.quiet_load, args.quiet_patience)
    print(quiet, flush=True)
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
        if use_pa:
            r = perf_analyzer(proc, scenario, key, model, c, batching, args.duration, streaming)
        elif binary is not None:
            r = measure_cpp(
                binary, proc, scenario, key, model, c, batching,
                duration=args.duration, warmup=args.warmup, channels=args.channels, threads=args.loadgen_threads,
                streaming=streaming,
            )  # fmt: skip
        else:
            r = measure(
                proc, scenario, key, model, c, batching,
                duration=args.duration, warmup=args.warmup, loadgen_processes=args.loadgen_processes,
                channels=args.channels, streaming=streaming,
            )  # fmt: skip
        r.extra["load_1min"] = os.getloadavg()[0]
        print(
            f"{scenario:24s} {key:4s} c={c:<3d} batching={batching:3s} {r.infer_per_s:8.0f}/s "
            f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms errors {r.errors} "
            f"cpu server {r.server_cpu_s:.2f}s loadgen {r.loadgen_cpu_s:.2f}s other {_other_share(r)}",
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
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadgen": loadgen,
        "loadgen_kind": "perf_analyzer" if use_pa else ("cpp" if binary is not None else "python"),
        "server": f"python -m maas.inference, {args.workers} worker process(es), {args.instances} instance(s), "
        f"{args.threads} intra-op thread(s), {delay}",
        "duration": args.duration,
        "warmup": args.warmup,
        "quiet": quiet,
        "load_before": load_before,
        "load_after": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    meta["goals"] = goals(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = _json_safe({"meta": meta, "results": [asdict(r) for r in results]})
    out.with_suffix(".json").write_text(json.dumps(document, indent=2, allow_nan=False))
    out.with_suffix(".md").write_text(report(results, meta))
    print(report(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
