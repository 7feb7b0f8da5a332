"""The gRPC load generators the serving benchmarks share (bench/inference_bench.py, formats_bench.py, text_bench.py).

perf_analyzer when one is on the PATH; else ours in C++ (bench/loadgen/loadgen.cc,
built here into bench/out/loadgen from Debian's libgrpc++-dev, installed with
apt-get when missing); else the Python fallback (several processes sending the
same bytes through generic calls on raw grpc.aio channels). `LoadGenerator.pick`
chooses, `LoadGenerator.measure` runs one closed-loop point against a served
process with a request serialized once (`request_bytes`), or several sent in
turn (each concurrent caller cycles through them, caller i starting at the
i-th: texts of different lengths), and returns a `Result` (infer/s, p50/p99,
the server's and its own CPU time over the window).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.inference import support  # noqa: E402 - processes shared with the tests

OUT = ROOT / "bench" / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")

Payload = bytes | Sequence[bytes]  # one serialized request, or several sent in turn


def payloads(payload: Payload) -> list[bytes]:
    return [payload] if isinstance(payload, bytes) else list(payload)


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


def request_bytes(model: str, input_name: str, shape: tuple[int, ...], seed: int, x: np.ndarray | None = None) -> bytes:
    """One ModelInferRequest with a raw FP32 row (`x`, else a random one), serialized once (as perf_analyzer
    prepares its inputs once). No model_version: the server answers with the version it serves."""
    from tritonclient.grpc import service_pb2

    if x is None:
        x = np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(1, *shape)
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=[1, *shape])
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def _load_process(
    address: str,
    payload: list[bytes],
    tasks: int,
    channels: int,
    start_at: float,
    duration: float,
    streaming: bool,
    conn: Any,
) -> None:
    """Send `payload` (its requests in turn) from `tasks` asyncio tasks over `channels` connections; report
    latencies and CPU.

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
            await call(payload[0])
        latencies: list[float] = []
        errors = 0
        end = start_at + duration
        now = time.time

        async def run_unary(k: int) -> None:
            nonlocal errors
            call = unary[k % channels]
            i = k
            while (t0 := now()) < end:
                request = payload[i % len(payload)]
                i += 1
                try:
                    await call(request)
                except grpc.RpcError:
                    errors += t0 >= start_at
                    continue
                if t0 >= start_at:
                    latencies.append(now() - t0)

        async def run_stream(k: int) -> None:
            """One bidirectional stream per task, one request in flight on it (as perf_analyzer --streaming)."""
            nonlocal errors
            call = stream[k % channels]()
            i = k
            try:
                while (t0 := now()) < end:
                    await call.write(payload[i % len(payload)])
                    i += 1
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


def proc_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def server_pids(proc: support.Process) -> list[int]:
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
    payload: Payload,
    concurrency: int,
    batching: str,
    *,
    duration: float,
    warmup: float,
    loadgen_processes: int,
    channels: int = 0,
    streaming: bool = False,
) -> Result:
    """One point with the Python load generator: `payload` (serialized ModelInferRequests) sent as it is."""
    procs = max(1, min(loadgen_processes, concurrency))
    requests = payloads(payload)
    offset = 0
    ctx = mp.get_context("spawn")
    start_at = time.time() + warmup + 2.0  # spawning and importing take a moment
    workers = []
    for i in range(procs):
        tasks = concurrency // procs + (1 if i < concurrency % procs else 0)
        mine = requests[offset % len(requests) :] + requests[: offset % len(requests)]  # caller k starts at k
        offset += tasks
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=_load_process,
            args=(
                proc.address,
                mine,
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
    pids = server_pids(proc)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = proc_cpu(pids)
    time.sleep(duration)
    cpu1 = proc_cpu(pids)
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
    payload: Payload,
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
    OUT.mkdir(parents=True, exist_ok=True)
    files = []
    for i, request in enumerate(payloads(payload)):
        files.append(OUT / f"request-{os.getpid()}-{i}.bin")
        files[-1].write_bytes(request)
    cmd = [
        str(binary), "--target", proc.address, *(a for f in files for a in ("--payload", str(f))),
        "--concurrency", str(concurrency),
        "--channels", str(channels or concurrency), "--threads", str(threads), "--warmup", str(warmup),
        "--duration", str(duration), "--watch-pids", ",".join(str(p) for p in server_pids(proc)),
        *(["--streaming"] if streaming else []),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 120)
    finally:
        for file in files:
            file.unlink(missing_ok=True)
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
    *,
    command: Sequence[str] = ("perf_analyzer",),
    protocol: str = "grpc",
    extra_args: Sequence[str] = (),
) -> Result:
    """One perf_analyzer measurement (used when the binary is on the PATH, or `command` runs it).

    `protocol` "http" measures the server's HTTP/REST port (perf_analyzer -i http) instead of gRPC's.
    """
    url = proc.http_url.split("://", 1)[1] if protocol == "http" else proc.address
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "pa.csv"
        cmd = [
            *command, "-m", model, "-u", url, "-i", protocol, "-b", "1",
            "--concurrency-range", str(concurrency), "--measurement-interval", str(int(duration * 1000)),
            "--percentile", "99", "-f", str(csv), *(["--streaming"] if streaming else []), *extra_args,
        ]  # fmt: skip
        pids = server_pids(proc)
        cpu0 = proc_cpu(pids)
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        cpu1 = proc_cpu(pids)
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


# ------------------------------------------------------------ the choice


@dataclass
class LoadGenerator:
    """The load generator one run uses for every point, and what the reports call it."""

    kind: str  # perf_analyzer, cpp or python
    description: str
    binary: Path | None = None
    threads: int = 1
    processes: int = 2
    channels: int = 0

    @classmethod
    def pick(cls, choice: str, *, threads: int = 1, processes: int = 2, channels: int = 0) -> LoadGenerator:
        """auto: perf_analyzer when on the PATH, else ours in C++, else ours in Python; RuntimeError when `cpp`
        is asked for and cannot be built."""
        if choice == "auto" and shutil.which("perf_analyzer") is not None:
            return cls("perf_analyzer", "perf_analyzer", threads=threads, processes=processes, channels=channels)
        binary: Path | None = None
        why = "not asked for"
        if choice in ("auto", "cpp"):
            binary, why = build_loadgen()
            if binary is None and choice == "cpp":
                raise RuntimeError(f"the C++ load generator cannot be built: {why}")
        if binary is not None:
            description = (
                f"ours in C++ (bench/loadgen/loadgen.cc, grpc++ GenericStub, {threads} completion-queue "
                f"thread(s), {channels or 'one'} connection(s){' in all' if channels else ' per concurrent request'}"
                ", the request serialized once with tritonclient's message; not perf_analyzer: none on the PATH)"
            )
            return cls("cpp", description, binary, threads, processes, channels)
        description = (
            f"ours in Python, the fallback (the C++ one could not be built: {why}; {processes} "
            f"processes, {channels or 'one connection per task,'} {'connections each, ' if channels else ''}"
            "request serialized once with tritonclient's message and sent as bytes through generic calls on a raw "
            "grpc.aio channel; not perf_analyzer: none on the PATH)"
        )
        return cls("python", description, None, threads, processes, channels)

    def measure(
        self,
        proc: support.Process,
        scenario: str,
        model_key: str,
        model: str,
        payload: Payload,
        concurrency: int,
        batching: str,
        *,
        duration: float,
        warmup: float,
        streaming: bool = False,
    ) -> Result:
        """One closed-loop point at `concurrency`; perf_analyzer makes its own request for `model`."""
        if self.kind == "perf_analyzer":
            return perf_analyzer(proc, scenario, model_key, model, concurrency, batching, duration, streaming)
        if self.binary is not None:
            return measure_cpp(
                self.binary, proc, scenario, model_key, payload, concurrency, batching,
                duration=duration, warmup=warmup, channels=self.channels, threads=self.threads, streaming=streaming,
            )  # fmt: skip
        return measure(
            proc, scenario, model_key, payload, concurrency, batching,
            duration=duration, warmup=warmup, loadgen_processes=self.processes, channels=self.channels,
            streaming=streaming,
        )  # fmt: skip


# ------------------------------------------------------------ shared bits


def other_share(r: Result) -> str:
    """CPU the rest of the machine used during the window (neither server nor load generator), % of all cores."""
    busy = r.extra.get("machine_busy_cpu_s")
    if busy is None or r.server_cpu_s != r.server_cpu_s or r.loadgen_cpu_s != r.loadgen_cpu_s or not r.seconds:
        return ""
    other = max(0.0, float(busy) - r.server_cpu_s - r.loadgen_cpu_s)
    return f"{other / r.seconds / (os.cpu_count() or 1) * 100:.0f}"


def other_cpu(results: list[Result]) -> str:
    """What the rest of the machine used during the measurement windows (median and max of the points)."""
    shares = [float(s) for r in results if (s := other_share(r))]
    return f"median {statistics.median(shares):.0f} %, max {max(shares):.0f} %" if shares else "an unknown share"


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of a point's rounds (NaN left out); None when there is none."""
    finite = [v for v in values if v == v]
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)} if finite else None


def spread_text(s: dict[str, float] | None, fmt: str, scale: float = 1.0) -> str:
    """`median (min-max)`, each multiplied by `scale` and formatted with `fmt`; "-" for none."""
    if not s:
        return "-"
    return f"{s['median'] * scale:{fmt}} ({s['min'] * scale:{fmt}}-{s['max'] * scale:{fmt}})"


def run_meta(loadgen: LoadGenerator) -> dict[str, Any]:
    """When, where and with which load generator a serving benchmark ran: the head of its meta document."""
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadgen": loadgen.description,
        "loadgen_kind": loadgen.kind,
    }


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


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
