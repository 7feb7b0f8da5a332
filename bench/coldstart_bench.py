"""Cold-start benchmark (`make bench-coldstart`): how long a request waits for an evicted model, and memory per version.

Measures, on this machine, with a real registry and `python -m maas.inference`:
- the cold start of an evicted model: two versions of one kind of model under a
  MAAS_INFERENCE_MEMORY_LIMIT that holds one of them, asked for in turn, so every
  request finds its model evicted by the one before and waits for its load (the
  artifact is in the replica's cache: its sha256 checked again, the runtime
  built, warmed up and probed for batch invariance). Per round: the client's
  latency of that first request, and of a second request right after (warm); the
  server's own load time (maas_inference_load_duration_seconds, cold="true").
  Kinds: the catalog MLP 64->128->10 and the CIFAR CNN (lenet) as safetensors
  (torch), and a dense ONNX layer 512 -> 2048 (4 MiB, onnxruntime).
- what a loaded version costs beyond what the limit counts: the server's RSS
  (VmRSS from /proc) before and after loading each of several versions one after
  the other, with no limit, against the size of the file it was built from (the
  4 MiB dense layer by default: smaller versions are within the allocator's noise).

Each figure is the median and min-max over its rounds, with the load average
before and after (the machine is shared). Results go to bench/out/coldstart.md
and bench/out/coldstart.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grpcload import json_safe, load_average, spread, spread_text  # noqa: E402
from tests.helpers import unused_port  # noqa: E402
from tests.inference import support  # noqa: E402 - processes and models shared with the tests

OUT = ROOT / "bench" / "out"
DENSE = {"width": 512, "outputs": 2048}


def register(client: Any, kind: str, name: str, seed: int) -> tuple[str, tuple[int, ...]]:
    """One version of `kind` under `name`; (its input name, its row shape)."""
    if kind == "mlp":
        support.register_torch(client, name, support.MLP_ARCH, seed=seed)
        return "input", (64,)
    if kind == "cnn":
        support.register_torch(client, name, support.LENET_ARCH, seed=seed)
        return "input", (3, 32, 32)
    graph, _, _ = support.onnx_dense(seed, **DENSE)
    support.register_onnx(client, name, graph, support.dense_signature(**DENSE))
    return "input", (DENSE["width"],)


def version_bytes(client: Any, name: str) -> int:
    """What the limit counts for a version: the size of the artifact it is served from (its only one here)."""
    version = client.resolve(f"{name}@production")
    return int(version.size_bytes)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def cold_loads(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> tuple[float, float]:
    """(count, sum of seconds) of the loads a request waited for."""
    count = sum(
        v
        for (n, labels), v in metrics.items()
        if n.endswith("load_duration_seconds_count") and ("cold", "true") in labels
    )
    total = sum(
        v
        for (n, labels), v in metrics.items()
        if n.endswith("load_duration_seconds_sum") and ("cold", "true") in labels
    )
    return count, total


def cold_start(work: Path, registry: support.Process, client: Any, kind: str, rounds: int) -> dict[str, Any]:
    import tritonclient.grpc as tc

    names = [f"cold-{kind}-a", f"cold-{kind}-b"]
    input_name, shape = "input", (0,)
    for i, name in enumerate(names):
        input_name, shape = register(client, kind, name, seed=i)
    size = max(version_bytes(client, n) for n in names)
    limit = size + size // 2  # one of the two at a time
    metrics_port = unused_port()
    proc = support.start_inference(
        registry.address,
        work / f"inference-{kind}",
        models=",".join(names),
        memory_limit=limit,
        metrics_port=metrics_port,
    )
    cold_ms: list[float] = []
    warm_ms: list[float] = []
    server_ms: list[float] = []
    try:
        with tc.InferenceServerClient(proc.address) as c:
            x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            tensor = tc.InferInput(input_name, [1, *shape], "FP32")
            tensor.set_data_from_numpy(x)

            def ask(name: str) -> float:
                t0 = time.perf_counter()
                c.infer(name, [tensor], client_timeout=120)
                return (time.perf_counter() - t0) * 1000

            ask(names[0])  # one of the two is loaded at start, the other kept for its first request
            for r in range(rounds + 1):
                name = names[(r + 1) % 2]
                before = cold_loads(scrape(metrics_port))
                first = ask(name)  # its model was evicted by the request before: a cold start
                warm = ask(name)
                after = cold_loads(scrape(metrics_port))
                if after[0] != before[0] + 1:
                    raise RuntimeError(f"{kind}: expected one cold load in round {r}, saw {after[0] - before[0]:.0f}")
                if r == 0:
                    continue  # the first load of this version in the process (nothing in memory yet of it)
                cold_ms.append(first)
                warm_ms.append(warm)
                server_ms.append((after[1] - before[1]) * 1000)
            metrics = scrape(metrics_port)
    finally:
        proc.stop()
    evictions = sum(v for (n, _), v in metrics.items() if n == "maas_inference_evictions")
    print(
        f"{kind}: cold {spread_text(spread(cold_ms), '.1f')} ms, warm {spread_text(spread(warm_ms), '.2f')} ms, "
        f"server load {spread_text(spread(server_ms), '.1f')} ms over {len(cold_ms)} rounds; {evictions:.0f} evictions",
        flush=True,
    )
    return {
        "kind": kind,
        "bytes": size,
        "limit": limit,
        "rounds": len(cold_ms),
        "cold_ms": cold_ms,
        "warm_ms": warm_ms,
        "server_load_ms": server_ms,
        "evictions": evictions,
        "cold": spread(cold_ms),
        "warm": spread(warm_ms),
        "server_load": spread(server_ms),
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_per_version(work: Path, registry: support.Process, client: Any, kind: str, count: int) -> dict[str, Any]:
    """RSS growth of the server per version loaded, against what the limit counts for it."""
    import tritonclient.grpc as tc

    names = [f"rss-{kind}-{i}" for i in range(count + 1)]
    for i, name in enumerate(names):
        register(client, kind, name, seed=100 + i)
    counted = [version_bytes(client, n) for n in names]
    proc = support.start_inference(registry.address, work / f"inference-rss-{kind}", models="")
    growth: list[float] = []
    try:
        with tc.InferenceServerClient(proc.address) as c:
            c.load_model(names[0])  # the first load also brings the runtime's own code and arenas in
            for name, nbytes in zip(names[1:], counted[1:], strict=True):
                time.sleep(0.3)
                before = rss_kib(proc.popen.pid)
                c.load_model(name)
                time.sleep(0.3)
                growth.append((rss_kib(proc.popen.pid) - before) * 1024 / nbytes)
    finally:
        proc.stop()
    print(f"{kind}: RSS growth per version {spread_text(spread(growth), '.2f')} x its counted bytes", flush=True)
    return {"kind": kind, "bytes": counted[1], "versions": count, "rss_over_counted": growth, "ratio": spread(growth)}


def report(cold: list[dict[str, Any]], memory: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Cold-start benchmark",
        "",
        f"Measured {meta['when']} ({meta['cpus']} CPUs); load average (1/5/15 min) {meta['load_before']} before, "
        f"{meta['load_after']} after. Figures: median (min-max) over the rounds.",
        "",
        "## A request for an evicted model",
        "",
        "Two versions of each kind under a memory limit that holds one; each request finds its model evicted "
        "by the request before. Cold: the client's latency of that request (it waits for the load); warm: "
        "the next request; server load: the load as the server timed it (resolve, cache check, build, "
        "warm-up, batch-invariance probe).",
        "",
        "| model | counted bytes | rounds | cold ms | warm ms | server load ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in cold:
        lines.append(
            f"| {r['kind']} | {r['bytes']:,} | {r['rounds']} | {spread_text(r['cold'], '.1f')} "
            f"| {spread_text(r['warm'], '.2f')} | {spread_text(r['server_load'], '.1f')} |"
        )
    lines += [
        "",
        "## Memory of a loaded version beyond what the limit counts",
        "",
        "The server's RSS growth for each version loaded after the first, over the size of its artifact "
        "(what MAAS_INFERENCE_MEMORY_LIMIT counts for it).",
        "",
        "| model | counted bytes | versions | RSS growth / counted |",
        "|---|---|---|---|",
    ]
    for m in memory:
        lines.append(f"| {m['kind']} | {m['bytes']:,} | {m['versions']} | {spread_text(m['ratio'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="cold starts measured per kind")
    parser.add_argument("--kinds", default="mlp,cnn,dense", help="which of: mlp, cnn, dense")
    parser.add_argument("--versions", type=int, default=5, help="versions loaded for the memory figure")
    parser.add_argument(
        "--rss-kinds",
        default="dense",
        help="kinds for the memory figure (a version of a few hundred KiB is within the allocator's noise)",
    )
    parser.add_argument("--out", default=str(OUT / "coldstart"), help="report path without extension")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="maas-bench-coldstart-"))
    registry = support.start_registry(work / "registry")
    client = support.registry_client(registry.address)
    try:
        cold = [cold_start(work, registry, client, kind, args.rounds) for kind in kinds]
        memory = [memory_per_version(work, registry, client, kind, args.versions) for kind in args.rss_kinds.split(",")]
    finally:
        client.close()
        registry.stop()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_average(),
        "median_cold_ms": {r["kind"]: statistics.median(r["cold_ms"]) for r in cold if r["cold_ms"]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(json_safe({"meta": meta, "cold": cold, "memory": memory}), indent=2))
    out.with_suffix(".md").write_text(report(cold, memory, meta))
    print(f"wrote {out.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
