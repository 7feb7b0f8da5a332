"""HTTP/REST vs gRPC benchmark (`make bench-http`): the MLP through both ports of one server, with perf_analyzer.

One inference server (`python -m maas.inference`: one serving process, one intra-op
thread, batching on) serves the MLP 64->128->10. perf_analyzer (bench/perf_analyzer_runtime.py: from the PATH, or the
PyPI wheel run with Debian 13's glibc where the system's is too old) measures it at
each concurrency through gRPC (`-i grpc`) and HTTP/REST (`-i http`, binary tensor
data, as perf_analyzer sends it), unary, batch 1, in rounds: each round measures both
back to back (the order alternating from round to round), so the HTTP / gRPC ratio is
taken within a round under the same outside load. The report gives the median and
the min-max over the rounds of infer/s, p99 and the ratio, the load average before
and after, and what the rest of the machine did. Results go to bench/out/http.md and
bench/out/http.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer_runtime  # noqa: E402
from bench.grpcload import (  # noqa: E402
    OUT,
    LoadGenerator,
    Result,
    json_safe,
    load_average,
    perf_analyzer,
    run_meta,
    spread,
    spread_text,
    wait_for_quiet,
)
from tests.inference import support  # noqa: E402

MODEL = "bench-mlp"
PROTOCOLS = ("grpc", "http")


def report(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# HTTP/REST vs gRPC (the MLP, perf_analyzer)",
        "",
        f"{meta['when']}, {meta['cpus']} CPUs ({meta['machine']}); server: {meta['server']}; "
        f"load generator: {meta['loadgen']}; {meta['rounds']} rounds of {meta['duration']:g} s windows per point; "
        f"load average before {meta['load_before']}, after {meta['load_after']}, median 1-min load over the "
        f"points {meta['median_load_1min']:.2f} ({meta['quiet']}); the load generator shares the cores.",
        "",
        "| concurrency | gRPC infer/s | HTTP infer/s | HTTP / gRPC | gRPC p99 ms | HTTP p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for c in meta["concurrency"]:
        by: dict[str, list[Result]] = {
            p: [r for r in results if r.concurrency == c and r.scenario == p] for p in PROTOCOLS
        }
        pairs = zip(by["grpc"], by["http"], strict=True)
        ratios = [h.infer_per_s / g.infer_per_s for g, h in pairs if g.infer_per_s == g.infer_per_s and g.infer_per_s]
        cells = [
            spread_text(spread([r.infer_per_s for r in by["grpc"]]), ",.0f"),
            spread_text(spread([r.infer_per_s for r in by["http"]]), ",.0f"),
            spread_text(spread(ratios), ".2f"),
            spread_text(spread([r.p99_ms for r in by["grpc"]]), ".1f"),
            spread_text(spread([r.p99_ms for r in by["http"]]), ".1f"),
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    failed = sum(1 for r in results if r.extra.get("failed"))
    lines += ["", "Each cell: median (min-max) over the rounds; the ratio is taken within each round."]
    if failed:
        lines.append(f"{failed} point(s) failed (perf_analyzer found no stable window) and are left out.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each perf_analyzer window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes sharing each port (with 2, perf_analyzer -i http sometimes stops with 'failed to "
        "find the requested model version': its statistics requests land on processes that keep their own)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per execution")
    parser.add_argument("--quiet-load", type=float, default=1.0, help="wait for a 1-min load average at most this")
    parser.add_argument("--quiet-patience", type=float, default=600.0, help="seconds to wait for it at most")
    parser.add_argument("--out", default=str(OUT / "http"), help="report path without extension")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    try:
        command = perf_analyzer_runtime.prepare()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"perf_analyzer cannot run here: {exc}", file=sys.stderr)
        return 1
    loadgen = LoadGenerator("perf_analyzer", f"perf_analyzer 2.60 ({' '.join(command[-1:])}), -i grpc / -i http")
    print(f"load generator: {loadgen.description}", flush=True)
    quiet = wait_for_quiet(args.quiet_load, args.quiet_patience)
    print(quiet, flush=True)
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="maas-bench-http-"))
    results: list[Result] = []
    registry = support.start_registry(work / "registry")
    try:
        client = support.registry_client(registry.address)
        support.register_torch(client, MODEL, support.MLP_ARCH, seed=1)
        client.close()
        server = support.start_inference(
            registry.address, work / "inference", models=MODEL, workers=args.workers,
            intra_op_threads=args.threads, log_level="WARNING",
        )  # fmt: skip
        try:
            for round_ in range(args.rounds):
                for c in concurrencies:
                    order = PROTOCOLS if round_ % 2 == 0 else PROTOCOLS[::-1]
                    for protocol in order:
                        try:
                            # Stability wide open: the rounds give the spread; on 2 shared cores p99 alone
                            # varies past 100 % from one window to the next.
                            r = perf_analyzer(
                                server, protocol, "mlp", MODEL, c, "on", args.duration, False,
                                command=command, protocol=protocol,
                                extra_args=("--stability-percentage", "1000", "--max-trials", "5"),
                            )  # fmt: skip
                        except subprocess.CalledProcessError as exc:
                            why = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
                            print(f"round {round_} {protocol} c={c}: perf_analyzer failed: {why}", file=sys.stderr)
                            nan = float("nan")
                            r = Result(protocol, "mlp", c, "on", 0, 1, args.duration, nan, nan, nan, nan, nan)
                            r.extra["failed"] = why
                        r.extra.update(round=round_, load_1min=os.getloadavg()[0])
                        print(
                            f"round {round_} {protocol:4s} c={c:<3d} {r.infer_per_s:8.0f}/s "
                            f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms load {r.extra['load_1min']:.2f}",
                            flush=True,
                        )
                        results.append(r)
        finally:
            server.stop()
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        **run_meta(loadgen),
        "server": f"python -m maas.inference, {args.workers} worker process(es) per port, "
        f"{args.threads} intra-op thread(s), batching on",
        "duration": args.duration,
        "rounds": args.rounds,
        "concurrency": concurrencies,
        "quiet": quiet,
        "load_before": load_before,
        "load_after": load_average(),
        "median_load_1min": statistics.median(r.extra["load_1min"] for r in results if "load_1min" in r.extra),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = json_safe({"meta": meta, "results": [asdict(r) for r in results]})
    out.with_suffix(".json").write_text(json.dumps(document, indent=2, allow_nan=False))
    text = report(results, meta)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
