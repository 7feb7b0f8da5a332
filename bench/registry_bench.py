"""Registry benchmark (`make bench-registry`): everything measured through gRPC.

For each backend (SQLite file; PostgreSQL in a throwaway database) this starts
`python -m maas.registry serve` as its own process, as it is deployed, and
drives it from this process over a real channel, transport included:

- sequential CreateVersion calls per second (one client, one call at a time);
- batched metric ingestion: LogMetrics with batches of 10,000 points, points/s;
- the full history of one metric with 100,000 points, read through the paged
  GetMetricHistory (default page and the largest page), seconds;
- p50/p95 latency of paged lists and searches on a model with 10,000 versions
  (ListVersions newest/oldest/by metric/by status/by tag, first and deep
  pages; ListModels over 1,000 models; GetMetricHistory first page).

Goals (issue 2): >= 500 creates/s, >= 100,000 points/s, <= 0.5 s for the
100k-point history, <= 20 ms p50 for any paged list with 10k versions.
Results: a table on stdout, bench/out/registry.md and bench/out/registry.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import selectors
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from sqlalchemy.engine import make_url

from maas.v1 import common_pb2, registry_pb2_grpc
from maas.v1 import registry_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import unused_port  # noqa: E402 - the metrics port helper shared with the tests

OUT = ROOT / "bench" / "out"
PG_ADMIN_URL = os.environ.get("MAAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")

GOALS = {
    "creates_per_s": (">=", 500.0),
    "points_per_s": (">=", 100_000.0),
    "history_100k_s": ("<=", 0.5),
    "list_p50_ms": ("<=", 20.0),
}
# MLflow 3.17's SQLAlchemy store on SQLite, measured on this machine (issue 2).
YARDSTICK = {
    "creates_per_s": "about 240/s",
    "points_per_s": "about 11,000 points/s (log_batch)",
    "history_100k_s": "about 2.6 s",
    "list_p50_ms": "about 360 ms (latest versions of a model with 10,000 versions)",
}


@dataclass
class BackendResult:
    backend: str
    creates_per_s: float = 0.0
    creates: int = 0
    points_per_s: float = 0.0
    points: int = 0
    history_100k_s: float = 0.0
    history_100k_default_page_s: float = 0.0
    lists: dict[str, dict[str, float]] = field(default_factory=dict)
    list_p50_ms: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    # One-row INSERT + COMMIT, sequential, through the same driver and settings
    # as the registry: the ceiling of any sequential write.
    commit_ceiling_per_s: float = 0.0


# ------------------------------------------------------------ the server


class Server:
    """`python -m maas.registry serve` in its own process."""

    def __init__(self, db_url: str, artifact_root: Path, log_path: Path) -> None:
        env = {
            **os.environ,
            "MAAS_REGISTRY_PORT": "0",
            "MAAS_REGISTRY_METRICS_PORT": str(unused_port()),  # as deployed: metrics on ("0" turns them off)
            "MAAS_REGISTRY_DATABASE_URL": db_url,
            "MAAS_REGISTRY_ARTIFACT_ROOT": str(artifact_root),
            "MAAS_REGISTRY_LOG_LEVEL": "WARNING",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maas.registry", "serve"],
            stdout=subprocess.PIPE,
            stderr=log_path.open("w"),
            text=True,
            env=env,
        )
        self.address = self._wait_listening(log_path)

    def _wait_listening(self, log_path: Path) -> str:
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if selector.select(timeout=1):
                line = self.proc.stdout.readline()
                if not line:
                    break
                match = re.search(r"listening on (\S+?)(?:,|$)", line)
                if match:
                    selector.close()
                    return match.group(1)
        self.proc.kill()
        raise SystemExit(f"the registry did not start:\n{log_path.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"maas_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(PG_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def commit_ceiling(db_url: str, seconds: float = 2.0) -> float:
    """Durable one-row transactions per second, sequentially, without the registry."""
    url = make_url(db_url)
    count = 0
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE bench_ceiling (id bigserial PRIMARY KEY, v bigint)")
            conn.commit()
            deadline = time.perf_counter() + seconds
            start = time.perf_counter()
            while time.perf_counter() < deadline:
                conn.execute("INSERT INTO bench_ceiling (v) VALUES (1)")
                conn.commit()
                count += 1
            elapsed = time.perf_counter() - start
            conn.execute("DROP TABLE bench_ceiling")
            conn.commit()
        return count / elapsed
    # As the registry opens SQLite: WAL, synchronous=NORMAL, BEGIN IMMEDIATE.
    with contextlib.closing(sqlite3.connect(url.database or "", isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE bench_ceiling (id INTEGER PRIMARY KEY, v INTEGER)")
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_ceiling (v) VALUES (1)")
            conn.execute("COMMIT")
            count += 1
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_ceiling")
    return count / elapsed


def analyze(db_url: str) -> None:
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")
    else:
        with contextlib.closing(sqlite3.connect(url.database or "")) as conn:
            conn.execute("ANALYZE")


# ------------------------------------------------------------- workloads


def version_request(model: str, **kwargs: Any) -> pb.CreateVersionRequest:
    req = pb.CreateVersionRequest(
        model=model,
        format=pb.MODEL_FORMAT_SAFETENSORS,
        signature=common_pb2.Signature(
            inputs=[common_pb2.TensorSpec(name="input", datatype=common_pb2.DATA_TYPE_FP32, shape=[-1, 64])],
            outputs=[common_pb2.TensorSpec(name="logits", datatype=common_pb2.DATA_TYPE_FP32, shape=[-1, 10])],
        ),
        **kwargs,
    )
    req.architecture.update(
        {"name": "mlp", "args": {"in_features": 64, "hidden": [128], "num_classes": 10}, "input_shape": [64]}
    )
    return req


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


async def sequential_creates(stub: Any, n: int) -> float:
    await stub.CreateModel(pb.CreateModelRequest(name="seq"))
    request = version_request("seq", tags={"team": "vision"}, metrics={"val_accuracy": 0.9})
    for _ in range(20):  # warm-up: connections, caches
        await stub.CreateVersion(request)
    start = time.perf_counter()
    for _ in range(n):
        await stub.CreateVersion(request)
    return n / (time.perf_counter() - start)


def batch(key: str, first_step: int, size: int) -> pb.MetricSeries:
    now = int(time.time() * 1000)
    return pb.MetricSeries(
        key=key,
        steps=range(first_step, first_step + size),
        values=[random.random() for _ in range(size)],
        timestamps_ms=[now] * size,
    )


async def ingestion(stub: Any, batches: int, size: int) -> float:
    run = await stub.CreateRun(pb.CreateRunRequest(name="ingest"))
    prepared = [
        pb.LogMetricsRequest(run_id=run.run_id, series=[batch(f"m{i % 4}", (i // 4) * size, size)])
        for i in range(batches)
    ]
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[batch("warm", 0, 100)]))
    start = time.perf_counter()
    written = 0
    for request in prepared:
        written += (await stub.LogMetrics(request)).points_written
    return written / (time.perf_counter() - start)


async def read_history(stub: Any, run_id: str, key: str, page_size: int) -> int:
    token = ""
    points = 0
    while True:
        resp = await stub.GetMetricHistory(
            pb.GetMetricHistoryRequest(
                run_id=run_id, key=key, page=common_pb2.PageRequest(page_size=page_size, page_token=token)
            )
        )
        points += len(resp.series.steps)
        token = resp.next_page_token
        if not token:
            return points


async def history(stub: Any, points: int, repeat: int) -> tuple[float, float, str]:
    run = await stub.CreateRun(pb.CreateRunRequest(name="history"))
    for first in range(0, points, 10_000):
        await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[batch("loss", first, 10_000)]))
    assert await read_history(stub, run.run_id, "loss", 100_000) == points
    largest = await timed(lambda: read_history(stub, run.run_id, "loss", 100_000), repeat)
    default = await timed(lambda: read_history(stub, run.run_id, "loss", 0), repeat)
    return statistics.median(largest), statistics.median(default), run.run_id


async def populate(stub: Any, versions: int, models: int) -> None:
    """One model with `versions` versions (metrics, tags, some FAILED), plus `models` small models."""
    await stub.CreateModel(pb.CreateModelRequest(name="big", tags={"team": "vision"}))
    sem = asyncio.Semaphore(16)
    rng = random.Random(0)

    async def one(i: int) -> None:
        async with sem:
            req = version_request(
                "big", metrics={"val_accuracy": rng.random(), "loss": rng.random()}, tags={"split": f"s{i % 10}"}
            )
            v = await stub.CreateVersion(req)
            if i % 10 == 0:
                await stub.FailVersion(pb.FailVersionRequest(model="big", version=v.version, reason="bench"))

    await asyncio.gather(*(one(i) for i in range(versions)))

    async def model(i: int) -> None:
        async with sem:
            await stub.CreateModel(pb.CreateModelRequest(name=f"model-{i:05d}", tags={"team": f"t{i % 7}"}))

    await asyncio.gather(*(model(i) for i in range(models)))


async def deep_token(stub: Any, request: Any, method: str, pages: int) -> str:
    """The page token `pages` pages into a listing (to time a page in the middle)."""
    token = ""
    for _ in range(pages):
        request.page.page_token = token
        token = (await getattr(stub, method)(request)).next_page_token
    return token


async def lists(stub: Any, repeat: int, history_run: str) -> dict[str, dict[str, float]]:
    def versions(**kwargs: Any) -> pb.ListVersionsRequest:
        return pb.ListVersionsRequest(model="big", page=common_pb2.PageRequest(page_size=100), **kwargs)

    by_metric = {"order": pb.VERSION_ORDER_METRIC_DESC, "order_metric": "val_accuracy"}
    cases: dict[str, tuple[str, Any]] = {
        "ListVersions newest, first page": ("ListVersions", versions()),
        "ListVersions oldest, first page": ("ListVersions", versions(order=pb.VERSION_ORDER_OLDEST)),
        "ListVersions by val_accuracy, first page": ("ListVersions", versions(**by_metric)),
        "ListVersions status FAILED, first page": (
            "ListVersions",
            versions(statuses=[pb.VERSION_STATUS_FAILED]),
        ),
        "ListVersions tag split=s3, first page": (
            "ListVersions",
            versions(tags=[common_pb2.TagFilter(key="split", value="s3")]),
        ),
        "ListModels, first page": ("ListModels", pb.ListModelsRequest(page=common_pb2.PageRequest(page_size=100))),
        "ListModels prefix + tag": (
            "ListModels",
            pb.ListModelsRequest(
                name_prefix="model-00",
                tags=[common_pb2.TagFilter(key="team", value="t3")],
                page=common_pb2.PageRequest(page_size=100),
            ),
        ),
        "GetMetricHistory 100k, first page": (
            "GetMetricHistory",
            pb.GetMetricHistoryRequest(run_id=history_run, key="loss", page=common_pb2.PageRequest(page_size=100)),
        ),
    }
    deep = {
        "ListVersions newest, page 50": ("ListVersions", versions()),
        "ListVersions by val_accuracy, page 50": ("ListVersions", versions(**by_metric)),
    }
    for name, (method, request) in deep.items():
        request.page.page_token = await deep_token(stub, request, method, 49)
        cases[name] = (method, request)

    out: dict[str, dict[str, float]] = {}
    for name, (method, request) in cases.items():
        call = getattr(stub, method)
        await timed(lambda call=call, request=request: call(request), 10)  # warm-up
        samples = sorted(await timed(lambda call=call, request=request: call(request), repeat))
        out[name] = {
            "p50_ms": statistics.median(samples) * 1000,
            "p95_ms": samples[int(len(samples) * 0.95) - 1] * 1000,
            "items": float(len(getattr(await call(request), "versions", getattr(await call(request), "models", [])))),
        }
    return out


async def run_backend(
    backend: str, db_url: str, work: Path, args: argparse.Namespace, *, creates_only: bool = False
) -> BackendResult:
    result = BackendResult(backend)
    result.commit_ceiling_per_s = commit_ceiling(db_url)
    print(f"  [{backend}] commit ceiling {result.commit_ceiling_per_s:,.0f} transactions/s", flush=True)
    server = Server(db_url, work / "artifacts", work / f"registry-{backend}.log")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            cpu = server.cpu_seconds()

            def spent(name: str) -> None:
                nonlocal cpu
                now = server.cpu_seconds()
                result.server_cpu_s[name] = round(now - cpu, 2)
                cpu = now

            result.creates = args.creates
            result.creates_per_s = await sequential_creates(stub, args.creates)
            spent("creates")
            print(f"  [{backend}] {result.creates_per_s:,.0f} creates/s", flush=True)
            if creates_only:
                return result

            result.points = args.batches * 10_000
            result.points_per_s = await ingestion(stub, args.batches, 10_000)
            spent("ingestion")
            print(f"  [{backend}] {result.points_per_s:,.0f} points/s", flush=True)

            largest, default, run_id = await history(stub, 100_000, args.repeat_history)
            result.history_100k_s, result.history_100k_default_page_s = largest, default
            spent("history")
            print(f"  [{backend}] 100k history {largest:.3f} s (default pages {default:.3f} s)", flush=True)

            started = time.perf_counter()
            await populate(stub, args.versions, args.models)
            # Statistics as autovacuum (PostgreSQL) or PRAGMA optimize (SQLite) keep them on a
            # live database; freshly bulk-loaded tables have none yet.
            analyze(db_url)
            print(f"  [{backend}] populated in {time.perf_counter() - started:.1f} s", flush=True)
            result.lists = await lists(stub, args.repeat_lists, run_id)
            spent("lists")
            result.list_p50_ms = max(v["p50_ms"] for v in result.lists.values())
            print(f"  [{backend}] worst list p50 {result.list_p50_ms:.2f} ms", flush=True)
    finally:
        server.stop()
    return result


# --------------------------------------------------------------- report


def verdict(metric: str, value: float) -> str:
    op, goal = GOALS[metric]
    ok = value >= goal if op == ">=" else value <= goal
    return "met" if ok else "MISSED"


def report(
    results: list[BackendResult],
    extra: list[BackendResult],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> str:
    lines = [
        "# Registry benchmark",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}); the registry runs as its own process "
        "(`python -m maas.registry serve`, Prometheus metrics on), driven over gRPC from one client process. "
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: other work shared the CPUs.",
        "",
        "| measure | goal | MLflow yardstick | " + " | ".join(r.backend for r in results) + " |",
        "|---|---|---|" + "---|" * len(results),
    ]

    def row(label: str, metric: str, fmt: Callable[[BackendResult], str], value: Callable[[BackendResult], float]):
        op, goal = GOALS[metric]
        cells = " | ".join(f"{fmt(r)} ({verdict(metric, value(r))})" for r in results)
        lines.append(f"| {label} | {op} {goal:,g} | {YARDSTICK[metric]} | {cells} |")

    row(
        f"sequential CreateVersion ({args.creates} calls), per s",
        "creates_per_s",
        lambda r: f"{r.creates_per_s:,.0f}",
        lambda r: r.creates_per_s,
    )
    row(
        f"LogMetrics, batches of 10,000 ({args.batches} batches), points/s",
        "points_per_s",
        lambda r: f"{r.points_per_s:,.0f}",
        lambda r: r.points_per_s,
    )
    row(
        "full history of one metric, 100,000 points (page 100,000), s",
        "history_100k_s",
        lambda r: f"{r.history_100k_s:.3f}",
        lambda r: r.history_100k_s,
    )
    row(
        "same, default pages of 10,000, s",
        "history_100k_s",
        lambda r: f"{r.history_100k_default_page_s:.3f}",
        lambda r: r.history_100k_default_page_s,
    )
    row(
        f"worst p50 of the paged lists below ({args.versions:,} versions), ms",
        "list_p50_ms",
        lambda r: f"{r.list_p50_ms:.2f}",
        lambda r: r.list_p50_ms,
    )
    lines += [
        "",
        f"Paged lists and searches, page size 100, {args.repeat_lists} calls each: p50 / p95 in ms.",
        "",
        "| call | " + " | ".join(r.backend for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name in results[0].lists:
        cells = " | ".join(f"{r.lists[name]['p50_ms']:.2f} / {r.lists[name]['p95_ms']:.2f}" for r in results)
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "Sequential writes cannot beat the database's own commit rate; measured here with a one-row INSERT + "
        "COMMIT through the same driver and settings (SQLite: WAL, synchronous=NORMAL; PostgreSQL: the "
        "server's defaults, a WAL flush per commit):",
        "",
        "| database | commits/s | CreateVersion/s |",
        "|---|---|---|",
    ]
    for r in [*results, *extra]:
        lines.append(f"| {r.backend} | {r.commit_ceiling_per_s:,.0f} | {r.creates_per_s:,.0f} |")
    lines += ["", "Server CPU seconds per phase: " + "; ".join(f"{r.backend} {r.server_cpu_s}" for r in results), ""]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--repeat-history", type=int, default=5)
    parser.add_argument("--repeat-lists", type=int, default=200)
    parser.add_argument(
        "--no-async-commit",
        action="store_true",
        help="skip the extra CreateVersion run on PostgreSQL with synchronous_commit=off",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    results = []
    extra: list[BackendResult] = []
    for backend in args.backends.split(","):
        print(f"{backend}:", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"maas-bench-{backend}-") as tmp:
            work = Path(tmp)
            if backend == "sqlite":
                results.append(await run_backend(backend, f"sqlite:///{work / 'registry.db'}", work, args))
            else:
                with postgres_database() as url:
                    results.append(await run_backend(backend, url, work, args))
                if not args.no_async_commit:
                    # An operator's choice, made in the URL: commits stop waiting for the WAL flush.
                    with postgres_database() as url:
                        async_url = f"{url}?options=-csynchronous_commit%3Doff"
                        name = f"{backend}, synchronous_commit=off"
                        print(f"{name}:", flush=True)
                        extra.append(await run_backend(name, async_url, work, args, creates_only=True))

    text = report(results, extra, args, load_before, os.getloadavg())
    print()
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "registry.md").write_text(text)
    (OUT / "registry.json").write_text(
        json.dumps({"args": vars(args), "goals": GOALS, "results": [asdict(r) for r in results]}, indent=2)
    )
    print(f"wrote {OUT / 'registry.md'} and {OUT / 'registry.json'}")


if __name__ == "__main__":
    asyncio.run(main())
