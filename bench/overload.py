"""Overload benchmark: ten times the measured inference capacity, and how the service behaves.

The scenario of tests/security/test_inference_overload.py, with the timings the
test does not assert: a registry and one inference process serving a slow,
one-row model (about 50 ms per request, `max_queue_size` 16, one instance);
capacity measured with a closed loop of 4 clients; then an open loop offering
`--factor` times that rate from `--connections` connections for `--seconds`;
then a closed-loop burst of ordinary requests. Reported: the rate really
offered, outcomes by status code, how fast refusals come back (p50/p99/max),
the latency of admitted requests during the overload (p50/p99/max), admitted
throughput, the server's RSS before, at its peak during, and after the
overload, and the burst afterwards. Writes bench/out/overload.md and .json.

    .venv/bin/python bench/overload.py [--seconds 5] [--factor 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.security import inference_support as isup  # noqa: E402 - shared with the overload test
from tests.security import overload  # noqa: E402

OUT = ROOT / "bench" / "out"


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.array(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, isup.rss_bytes(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = isup.rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def scenario(address: str, pid: int, *, factor: float, seconds: float, connections: int) -> dict[str, Any]:
    body, x = overload.request()
    capacity, measured = await overload.closed_loop(address, body, concurrency=4, requests=100)
    rss_before = isup.rss_bytes(pid)
    rate = factor * capacity
    count = int(rate * seconds)
    with PeakRss(pid) as peak:
        outcomes = await overload.open_loop(address, body, rate=rate, count=count, connections=connections)
    rss_after = isup.rss_bytes(pid)
    _, after = await overload.closed_loop(address, body, concurrency=4, requests=100)

    codes = collections.Counter(o.code.name for o in outcomes)
    admitted = [o for o in outcomes if o.code == grpc.StatusCode.OK]
    refused = [o for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    sent_span = max(o.sent for o in outcomes) - min(o.sent for o in outcomes)
    answered_span = max(o.sent + o.latency for o in outcomes) - min(o.sent for o in outcomes)
    exact = sum(np.array_equal(overload.output_of(o.reply), x) for o in admitted)
    return {
        "settings": {**overload.SERVER_SETTINGS, "model": f"ONNX {overload.DEPTH} x MatMul [1, {overload.WIDTH}]"},
        "capacity_per_s": round(capacity, 1),
        "capacity_errors": sum(o.code != grpc.StatusCode.OK for o in measured),
        "factor": factor,
        "target_rate_per_s": round(rate, 1),
        "offered_rate_per_s": round((count - 1) / sent_span, 1) if sent_span > 0 else None,
        "connections": connections,
        "calls": count,
        "codes": dict(codes),
        "admitted_per_s": round(len(admitted) / answered_span, 1) if answered_span > 0 else None,
        "admitted_exact": exact,
        "refusal_latency": percentiles([o.latency for o in refused]),
        "admitted_latency": percentiles([o.latency for o in admitted]),
        "rss_mib": {
            "before": round(rss_before / 2**20, 1),
            "peak_during": round(peak.peak / 2**20, 1),
            "after": round(rss_after / 2**20, 1),
        },
        "after": {
            "calls": len(after),
            "ok": sum(o.code == grpc.StatusCode.OK for o in after),
            **percentiles([o.latency for o in after]),
        },
    }


def report(result: dict[str, Any], meta: dict[str, Any]) -> str:
    r = result
    codes = ", ".join(f"{k} {v:,}" for k, v in sorted(r["codes"].items()))
    ref, adm, rss, aft = r["refusal_latency"], r["admitted_latency"], r["rss_mib"], r["after"]
    lines = [
        "# Inference overload",
        "",
        f"Measured {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs), load average before "
        f"{meta['load_before']} and after {meta['load_after']}. `bench/overload.py`; the load generator "
        "runs on the same cores as the server.",
        "",
        f"Server: one inference process, {r['settings']['model']} (one row per request), "
        f"max_queue_size {r['settings']['max_queue_size']}, instances {r['settings']['instances']}.",
        "",
        "| what | value |",
        "|---|---|",
        f"| capacity (closed loop, 4 clients) | {r['capacity_per_s']:,} req/s |",
        f"| offered (open loop, {r['connections']} connections) | {r['offered_rate_per_s']:,} req/s "
        f"(target {r['factor']:g} x capacity = {r['target_rate_per_s']:,}) |",
        f"| calls | {r['calls']:,}: {codes} |",
        f"| admitted during overload | {r['admitted_per_s']:,} req/s, {r['admitted_exact']:,} exact answers |",
        f"| RESOURCE_EXHAUSTED latency | p50 {ref['p50_ms']} ms, p99 {ref['p99_ms']} ms, max {ref['max_ms']} ms |",
        f"| admitted latency during overload | p50 {adm['p50_ms']} ms, p99 {adm['p99_ms']} ms, "
        f"max {adm['max_ms']} ms |",
        f"| server RSS | {rss['before']} MiB before, {rss['peak_during']} MiB peak during, {rss['after']} MiB after |",
        f"| afterwards (closed loop, 4 clients) | {aft['ok']}/{aft['calls']} OK, p50 {aft['p50_ms']} ms, "
        f"p99 {aft['p99_ms']} ms |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the overload")
    parser.add_argument("--factor", type=float, default=10.0, help="offered rate as a multiple of capacity")
    parser.add_argument("--connections", type=int, default=32, help="client connections of the open loop")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="maas-overload-") as tmp:
        registry, proc = overload.start(Path(tmp))
        try:
            result = asyncio.run(
                scenario(
                    proc.address,
                    proc.popen.pid,
                    factor=args.factor,
                    seconds=args.seconds,
                    connections=args.connections,
                )
            )
        finally:
            code = proc.stop()
            registry.stop()
    result["exit_code"] = code
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "load_before": load_before,
        "load_after": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overload.json").write_text(json.dumps({"meta": meta, "result": result}, indent=2) + "\n")
    text = report(result, meta)
    (args.out / "overload.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
