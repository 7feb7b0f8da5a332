"""Formats benchmark (`make bench-formats`): torch vs onnxruntime vs int8 onnxruntime serving, per catalog model.

One run on this machine:
- a real suite: registry, trainer and inference as their own `python -m` processes;
- per catalog model (mlp, lenet, resnet18, mobilenet_v3_small), a training job on digits ([1, 8, 8]; the trainer
  registers the version with safetensors weights and its checked ONNX export), then an optimization job
  (OptimizeVersion, `--quantize int8`, the method the trainer picks for the architecture) that registers the int8
  ONNX version with its metrics: val_accuracy, parent_val_accuracy, accuracy_delta, size_ratio, latency_ratio;
- three inference processes with the same settings (workers, intra-op threads, batching) serve the same network:
  the parent version from safetensors with torch (MAAS_INFERENCE_PREFERRED_FORMAT=safetensors), the parent from its
  ONNX artifact with onnxruntime (the default), and the int8 version with onnxruntime. ModelMetadata's platform
  and version are checked, and one request's answers compared, before anything is timed;
- the load generator of the inference benchmark (bench/grpcload.py: perf_analyzer, else ours in C++, else the
  Python fallback) sends the same request bytes (one digits image, no model_version, so the three servers get the
  very same message) to each serving at each concurrency. Each round measures the three servings back to back at
  one concurrency, so each ratio (onnxruntime / torch, int8 / onnxruntime) is taken under the same outside load;
  rounds repeat it, and the tables give the median of the rounds with their min-max.

Results go to bench/out/formats.md and bench/out/formats.json (`make bench-report` includes them).

    .venv/bin/python bench/formats_bench.py [--quick] [--models mlp,lenet] [--rounds 3] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
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
    other_cpu,
    other_share,
    request_bytes,
    run_meta,
    spread,
    spread_text,
    wait_for_quiet,
)
from tests.inference import support  # noqa: E402 - processes shared with the tests
from tests.processes import ServiceProcess, start_service  # noqa: E402

OUT = ROOT / "bench" / "out"
SHAPE = (1, 8, 8)  # digits
LEARNED = 0.5  # a parent validation accuracy below this has not learned digits (chance is 0.1)
SERVINGS = ("torch", "onnxruntime", "int8 onnxruntime")
RATIOS = (("onnxruntime/torch", "onnxruntime", "torch"), ("int8/onnxruntime", "int8 onnxruntime", "onnxruntime"))
SIZES = ("MODEL_FORMAT_SAFETENSORS", "MODEL_FORMAT_ONNX", "int8 ONNX")
PLATFORMS = {"torch": "pytorch", "onnxruntime": "onnxruntime_onnx", "int8 onnxruntime": "onnxruntime_onnx"}

# Training jobs (JobSpec documents without model and data set): short, but long enough to learn digits.
TRAINING: dict[str, dict[str, Any]] = {
    "mlp": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}},
    "lenet": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
    "resnet18": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.001}},
    "mobilenet_v3_small": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.001}},
}


@dataclass
class Prepared:
    """A trained version and its int8 twin, as the suite registered them."""

    key: str
    model: str
    parent: int
    int8: int
    method: str
    metrics: dict[str, float]
    train_seconds: float
    optimize_seconds: float
    sizes: dict[str, int] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------- suite


def start_trainer(registry: str, workdir: Path, threads: int) -> ServiceProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "MAAS_TRAINER_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_TRAINER_DATA_DIR": str(workdir),
        "MAAS_TRAINER_REGISTRY_ADDRESS": registry,
        "MAAS_TRAINER_DEFAULT_THREADS": str(threads),
        "MAAS_TRAINER_MAX_CONCURRENT_JOBS": "1",
        "MAAS_TRAINER_POLL_INTERVAL": "0.2",
        "MAAS_TRAINER_GRACE_SECONDS": "1",
    }
    return start_service("maas.trainer", env, workdir / "trainer.log")


def _finished(trainer: Any, job: Any, what: str) -> Any:
    from maas.v1 import trainer_pb2 as tpb

    done = trainer.wait(job.job_id)
    if done.state != tpb.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"{what}: job {done.job_id} ended {tpb.JobState.Name(done.state)}: {done.reason}")
    return done


def prepare(trainer: Any, registry: Any, key: str, seed: int) -> Prepared:
    """Train `key` on digits through the trainer, then quantize it to int8 through OptimizeVersion."""
    from maas.v1 import registry_pb2 as rpb

    name = f"bench-formats-{key.replace('_', '-')}"
    spec = {"model": {"name": key}, "dataset": {"name": "digits"}, "seed": seed, "register_as": name, **TRAINING[key]}
    t0 = time.monotonic()
    trained = _finished(trainer, trainer.submit(spec), f"training {key}")
    train_s = time.monotonic() - t0
    parent = registry.get_version(name, trained.registered_version)
    formats = [a.format for a in parent.artifacts]
    if rpb.MODEL_FORMAT_ONNX not in formats or rpb.MODEL_FORMAT_SAFETENSORS not in formats:
        reason = parent.tags.get("onnx_export", "")
        raise RuntimeError(f"{name}/{parent.version} lacks an ONNX or safetensors artifact ({reason})")
    print(f"trained {name}/{parent.version} in {train_s:.0f} s: val_accuracy {parent.metrics['val_accuracy']:.4f}")
    t0 = time.monotonic()
    optimized = _finished(trainer, trainer.optimize(f"{name}/{parent.version}", quantize="int8"), f"int8 {key}")
    optimize_s = time.monotonic() - t0
    int8 = registry.get_version(name, optimized.registered_version)
    keys = ("val_accuracy", "parent_val_accuracy", "accuracy_delta", "size_ratio", "latency_ratio")
    metrics = {k: float(int8.metrics[k]) for k in keys if k in int8.metrics}
    sizes = {rpb.ModelFormat.Name(a.format): a.size_bytes for a in parent.artifacts}
    sizes["int8 ONNX"] = next(a.size_bytes for a in int8.artifacts if a.format == rpb.MODEL_FORMAT_ONNX)
    method = int8.tags.get("quantization_method", "?")
    print(
        f"int8 {name}/{int8.version} ({method}) in {optimize_s:.0f} s: "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )
    return Prepared(key, name, int(parent.version), int(int8.version), method, metrics, train_s, optimize_s, sizes)


def digits_row() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:1].reshape(1, *SHAPE).astype(np.float32)


def check_servings(procs: dict[str, support.Process], prep: Prepared, row: np.ndarray) -> dict[str, Any]:
    """Each server serves what it should (platform, version), and the three answer the same image alike."""
    import tritonclient.grpc as tc

    logits: dict[str, np.ndarray] = {}
    found: dict[str, Any] = {}
    for serving, proc in procs.items():
        client = tc.InferenceServerClient(proc.address)
        try:
            meta = client.get_model_metadata(prep.model)
            version = str(prep.int8 if serving.startswith("int8") else prep.parent)
            if meta.platform != PLATFORMS[serving] or list(meta.versions) != [version]:
                raise RuntimeError(f"{serving}: serves {meta.platform} {list(meta.versions)}, not {version}")
            x = tc.InferInput(meta.inputs[0].name, list(row.shape), "FP32")
            x.set_data_from_numpy(row)
            logits[serving] = client.infer(prep.model, [x]).as_numpy(meta.outputs[0].name)
            found[serving] = {
                "platform": meta.platform,
                "version": version,
                "min_execution_rows": support.min_execution_rows(proc.address, prep.model),
            }
        finally:
            client.close()
    torch_out, ort_out, int8_out = (logits[s] for s in SERVINGS)
    found["max_abs_diff_onnxruntime_torch"] = float(np.abs(ort_out - torch_out).max())
    found["max_abs_diff_int8_onnxruntime"] = float(np.abs(int8_out - ort_out).max())
    found["same_class"] = bool(torch_out.argmax() == ort_out.argmax() == int8_out.argmax())
    return found


# ---------------------------------------------------------------- summary


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """Per model and concurrency: each serving's rounds (median, min, max), and the per-round ratios."""
    rows = []
    keys = sorted({(r.model, r.concurrency) for r in results}, key=lambda k: (list(TRAINING).index(k[0]), k[1]))
    for model, c in keys:
        by: dict[str, dict[int, Result]] = {s: {} for s in SERVINGS}
        for r in results:
            if r.model == model and r.concurrency == c:
                by[r.scenario][r.extra["round"]] = r
        row: dict[str, Any] = {"model": model, "concurrency": c, "rounds": len(by[SERVINGS[0]])}
        for s in SERVINGS:
            rs = list(by[s].values())
            row[s] = {
                "infer_per_s": spread([r.infer_per_s for r in rs]),
                "p50_ms": spread([r.p50_ms for r in rs]),
                "p99_ms": spread([r.p99_ms for r in rs]),
                "errors": sum(r.errors for r in rs),
            }
        for label, num, den in RATIOS:
            rounds = sorted(set(by[num]) & set(by[den]))
            ratios = [by[num][k].infer_per_s / by[den][k].infer_per_s for k in rounds if by[den][k].infer_per_s]
            row[label] = spread(ratios)
        rows.append(row)
    return rows


def report(meta: dict[str, Any], models: list[Prepared], summary: list[dict[str, Any]]) -> str:
    lines = [
        "# Formats benchmark: torch vs onnxruntime vs int8 onnxruntime serving",
        "",
        f"Measured {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs); load average (1/5/15 min) "
        f"{meta['load_before']} when the measurements started, {meta['load_after']} at the end "
        f"({meta['quiet']}; the load average counts the benchmark's own servers and load generator). The rest of "
        f"the machine used {meta['other_cpu']} of all cores during the windows. Whole run {meta['run_seconds']:.0f} s.",
        f"Load generator: {meta['loadgen']}. Servers: {meta['server']}.",
        f"Each figure: the median of {meta['rounds']} rounds (min-max in brackets), each a {meta['duration']:g} s "
        f"window after a {meta['warmup']:g} s warm-up; one round measures the three servings back to back, and the "
        "ratios are per round (same round, same outside load). Request: one digits image [1, 1, 8, 8] FP32, the "
        "same bytes for all three.",
        "",
        "| model | concurrency | torch infer/s | onnxruntime infer/s | int8 onnxruntime infer/s | onnxruntime / torch "
        "| int8 / onnxruntime | p50 ms torch / ort / int8 | p99 ms torch / ort / int8 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        p50 = " / ".join(f"{row[s]['p50_ms']['median']:.2f}" for s in SERVINGS)
        p99 = " / ".join(f"{row[s]['p99_ms']['median']:.2f}" for s in SERVINGS)
        lines.append(
            f"| {row['model']} | {row['concurrency']} | "
            + " | ".join(spread_text(row[s]["infer_per_s"], ",.0f") for s in SERVINGS)
            + f" | {spread_text(row['onnxruntime/torch'], '.2f')} | {spread_text(row['int8/onnxruntime'], '.2f')} "
            f"| {p50} | {p99} | {sum(row[s]['errors'] for s in SERVINGS)} |"
        )
    lines += [
        "",
        "## int8: what the optimization job measured",
        "",
        "The optimize job's own metrics (on the parent training job's validation split; latency ratio: int8 / "
        "parent in one onnxruntime session each, 32 rows, median of 7 rounds). Sizes are the registered artifacts.",
        "",
        "| model | method | parent val_accuracy | int8 val_accuracy | accuracy_delta | size_ratio | latency_ratio "
        "| safetensors / ONNX / int8 ONNX bytes | train s | optimize s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in models:
        m = p.metrics
        sizes = " / ".join(
            f"{p.sizes.get(k, 0):,}" for k in ("MODEL_FORMAT_SAFETENSORS", "MODEL_FORMAT_ONNX", "int8 ONNX")
        )
        lines.append(
            f"| {p.key} | {p.method} | {m.get('parent_val_accuracy', float('nan')):.4f} | "
            f"{m.get('val_accuracy', float('nan')):.4f} | {m.get('accuracy_delta', float('nan')):+.4f} | "
            f"{m.get('size_ratio', float('nan')):.3f} | {m.get('latency_ratio', float('nan')):.3f} | {sizes} | "
            f"{p.train_seconds:.0f} | {p.optimize_seconds:.0f} |"
        )
    lines += ["", f"Training: {meta['training']}."]
    unlearned = [p.key for p in models if p.metrics.get("parent_val_accuracy", 0.0) < LEARNED]
    if unlearned:
        lines += [
            "",
            f"Not learned in this short job (parent val_accuracy under {LEARNED:g}): {', '.join(unlearned)}; their "
            "accuracy figures say nothing about int8, their throughput figures stand.",
        ]
    rows = {p.key: p.checks.get("torch", {}).get("min_execution_rows") for p in models}
    lines += [
        "",
        "Every execution runs at least the model's min_execution_rows (the server pads to it so that a row's answer "
        "does not depend on the batch): "
        + ", ".join(f"{k} {v}" for k, v in rows.items() if v is not None)
        + " (torch; onnxruntime: "
        + ", ".join(
            f"{p.key} {p.checks.get('onnxruntime', {}).get('min_execution_rows')}/"
            f"{p.checks.get('int8 onnxruntime', {}).get('min_execution_rows')}"
            for p in models
        )
        + " float/int8).",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp and lenet, 2 rounds of 2 s windows")
    parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(TRAINING)} (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per point (default 3; --quick 2)")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per point (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per point")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--workers", type=int, default=2, help="serving processes per server (all three alike)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per execution (all three alike)")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads of each training job")
    parser.add_argument("--loadgen", choices=("auto", "cpp", "python"), default="auto")
    parser.add_argument("--quiet-load", type=float, default=1.0, help="before timing, wait for this 1-min load")
    parser.add_argument("--quiet-patience", type=float, default=120.0, help="seconds to wait for it at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(OUT / "formats"), help="report path without extension")
    args = parser.parse_args()
    models = (args.models or ("mlp,lenet" if args.quick else ",".join(TRAINING))).split(",")
    unknown = [m for m in models if m not in TRAINING]
    if unknown:
        parser.error(f"unknown models {unknown} (known: {', '.join(TRAINING)})")
    rounds = args.rounds or (2 if args.quick else 3)
    duration = args.duration or (2.0 if args.quick else 3.0)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    started = time.monotonic()
    try:
        loadgen = LoadGenerator.pick(args.loadgen)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"load generator: {loadgen.description}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="maas-bench-formats-"))
    results: list[Result] = []
    prepared: list[Prepared] = []
    common: dict[str, Any] = {"workers": args.workers, "intra_op_threads": args.threads, "log_level": "WARNING"}
    registry = support.start_registry(work / "registry")
    try:
        from maas.client.registry import Registry
        from maas.client.trainer import Trainer

        trainer_proc = start_trainer(registry.address, work / "trainer", args.train_threads)
        try:
            with Trainer(trainer_proc.address) as trainer, Registry(registry.address) as reg:
                prepared = [prepare(trainer, reg, key, args.seed) for key in models]
        finally:
            trainer_proc.terminate()
            trainer_proc.wait(30)
            trainer_proc.stop()
        row = digits_row()
        quiet = wait_for_quiet(args.quiet_load, args.quiet_patience)  # training heats the machine up
        print(quiet, flush=True)
        load_before = load_average()
        for prep in prepared:
            refs = {"torch": prep.parent, "onnxruntime": prep.parent, "int8 onnxruntime": prep.int8}
            procs: dict[str, support.Process] = {}
            try:
                for serving, version in refs.items():
                    fmt: dict[str, Any] = {"preferred_format": "safetensors"} if serving == "torch" else {}
                    procs[serving] = support.start_inference(
                        registry.address, work / prep.key / serving.replace(" ", "-"),
                        models=f"{prep.model}/{version}", **common, **fmt,
                    )  # fmt: skip
                prep.checks = check_servings(procs, prep, row)
                print(f"{prep.key}: {prep.checks}", flush=True)
                for k in range(rounds):
                    for c in concurrencies:
                        payload = request_bytes(prep.model, "input", SHAPE, seed=0, x=row)
                        for serving in SERVINGS:
                            r = loadgen.measure(
                                procs[serving], serving, prep.key, prep.model, payload, c, "on",
                                duration=duration, warmup=args.warmup,
                            )  # fmt: skip
                            r.extra.update(round=k, load_1min=os.getloadavg()[0], version=refs[serving])
                            results.append(r)
                            print(
                                f"round {k} {prep.key:18s} c={c:<3d} {serving:16s} {r.infer_per_s:8.0f}/s "
                                f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms errors {r.errors} "
                                f"other CPU {other_share(r) or '?'}%",
                                flush=True,
                            )
            finally:
                for proc in procs.values():
                    proc.stop()
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(results)
    training = "; ".join(
        f"{k}: {spec['epochs']} epoch(s), batch {spec['batch_size']}, {spec['optimizer']['name']} "
        f"lr {spec['optimizer']['lr']:g}{f' momentum {m:g}' if (m := spec['optimizer'].get('momentum')) else ''}"
        for k, spec in TRAINING.items()
        if k in models
    )
    meta = {
        **run_meta(loadgen),
        "server": f"python -m maas.inference, one per serving, each {args.workers} worker process(es), "
        f"{args.threads} intra-op thread(s), dynamic batching on (the defaults otherwise)",
        "rounds": rounds,
        "duration": duration,
        "warmup": args.warmup,
        "concurrency": concurrencies,
        "quick": args.quick,
        "quiet": quiet,
        "load_before": load_before,
        "load_after": load_average(),
        "training": f"digits, {args.train_threads} torch thread(s) per job, seed {args.seed}; {training}",
        "other_cpu": other_cpu(results),
        "run_seconds": time.monotonic() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = json_safe(
        {
            "meta": meta,
            "models": [asdict(p) for p in prepared],
            "summary": summary,
            "results": [asdict(r) for r in results],
        }
    )
    out.with_suffix(".json").write_text(json.dumps(document, indent=2, allow_nan=False))
    text = report(meta, prepared, summary)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
