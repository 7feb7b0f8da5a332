"""`maas optimize REF`: int8 quantization (a new version) and edge formats (ORT, .pte) from a READY version."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.context import Context
from maas.cli.output import print_json, to_dict
from maas.cli.train import key_values
from maas.cli.watch import watch
from maas.client.trainer import state_name
from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as pb


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The OptimizeSpec document the flags describe."""
    doc: dict[str, Any] = {
        "source": args.ref,
        "quantize": args.quantize or "",
        "method": args.method or "",
        "formats": list(args.format or []),
        "register_as": args.register_as or "",
        "calibration_batches": args.calibration_batches or 0,
    }
    if args.dataset:
        doc["dataset"] = {"name": args.dataset, "path": args.dataset_path or ""}
        if args.dataset_arg:
            doc["dataset"]["args"] = key_values(args.dataset_arg, "--dataset-arg")
    if args.promote:
        doc["promotion"] = {"alias": args.promote, "metric": args.metric or "", "threshold": args.threshold or 0.0}
    return doc


def title(spec: pb.JobSpec) -> str:
    opt = spec.optimize
    what = [f"int8{f' ({opt.method})' if opt.method else ''}"] if opt.quantize else []
    return f"{' + '.join(what + list(opt.formats))} of {opt.source}"


def verdict(ctx: Context, job: pb.Job) -> tuple[bool, str, rpb.ModelVersion | None]:
    """(ok, one-line summary with what was measured, the version that holds the result)."""
    if job.state != pb.JOB_STATE_SUCCEEDED:
        why = f": {job.reason}" if job.reason else ""
        return False, f"job {job.job_id} ended {state_name(job.state)}{why}", None
    version = ctx.registry.get_version(job.registered_model, job.registered_version)
    ref = f"{version.model}/{version.version}"
    if version.status != rpb.VERSION_STATUS_READY:
        status = rpb.VersionStatus.Name(version.status).removeprefix("VERSION_STATUS_")
        return False, f"job {job.job_id} SUCCEEDED but {ref} is {status}: {version.status_reason}", version
    formats = ", ".join(rpb.ModelFormat.Name(a.format).removeprefix("MODEL_FORMAT_").lower() for a in version.artifacts)
    if not job.spec.optimize.quantize:
        checks = {"ort": "max |ort - onnx|", "pte": "max |pte - torch|"}
        diffs = [
            f"{label} {version.tags.get(f'{fmt}_max_abs_diff', '?')}"
            for fmt, label in checks.items()
            if fmt in job.spec.optimize.formats
        ]
        return True, f"{ref} now has {formats} ({', '.join(diffs)})", version
    m = {k: version.metrics.get(k, float("nan")) for k in ("val_accuracy", "accuracy_delta", "size_ratio")}
    latency = version.metrics.get("latency_ratio", float("nan"))
    text = (
        f"{ref} is READY: int8 ({version.tags.get('quantization_method', '?')}) of {job.spec.optimize.source}, "
        f"val_accuracy {m['val_accuracy']:.4f} (delta {m['accuracy_delta']:+.4f}), "
        f"size ratio {m['size_ratio']:.3f}, latency ratio {latency:.3f}; artifacts {formats}"
    )
    if job.promoted_alias:
        text += f"; promoted to {job.promoted_alias}"
    elif job.spec.promotion.alias:
        text += f"; not promoted to {job.spec.promotion.alias} (the rule did not pass)"
    return True, text, version


def run(args: argparse.Namespace, ctx: Context) -> int:
    job = ctx.trainer.optimize(options(args), idempotency_key=args.idempotency_key or "")
    if args.no_wait:
        if ctx.json:
            print_json(to_dict(job))
        else:
            print(job.job_id)
        return 0
    if not ctx.json:
        print(f"submitted job {job.job_id}: {title(job.spec)}")
    return watch(ctx, job.job_id, title=title(job.spec), judge=verdict)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "optimize",
        parents=[common],
        help="derive an int8 version and/or edge files (ORT, ExecuTorch .pte) from a READY version",
        description="Run an optimization job on a READY version: --quantize int8 registers a new version (ONNX, "
        "linked to its parent) with val_accuracy, accuracy_delta, size_ratio and latency_ratio measured on the "
        "parent job's validation split; --format ort adds an ORT-format file (ONNX Runtime Mobile), checked "
        "against the ONNX model, to the new version (or, without --quantize, to REF itself); --format pte adds an "
        "ExecuTorch program (.pte, XNNPACK) exported from REF's torch weights and checked against them "
        "(not with --quantize; the trainer needs maas-trainer[edge]).",
        epilog="example: maas optimize digits@production --quantize int8 --format ort --promote edge "
        "--metric accuracy_delta --threshold -0.01",
    )
    p.add_argument("ref", metavar="REF", help="the version: name/3, name@alias, or name (latest READY)")
    p.add_argument("--quantize", choices=["int8"], help="int8 quantization with onnxruntime (a new version)")
    p.add_argument(
        "--method",
        choices=["dynamic", "static"],
        help="dynamic, or static (calibrated on training data); default: static for convolutional networks",
    )
    p.add_argument(
        "--format", action="append", choices=["ort", "pte"], help="edge format to produce and check (repeatable)"
    )
    p.add_argument("--calibration-batches", type=int, metavar="N", help="training batches for static (default 8)")
    g = p.add_argument_group("evaluation data (default: what REF was trained on)")
    g.add_argument("--dataset", help="digits, cifar10, mnist, fashion_mnist, imagefolder, fake")
    g.add_argument("--dataset-path", help="imagefolder: folder under the trainer's data root")
    g.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="data set argument")
    g = p.add_argument_group("registration")
    g.add_argument("--register-as", metavar="MODEL", help="model of the new version (default: REF's model)")
    g.add_argument("--promote", metavar="ALIAS", help="alias to move when the rule passes")
    g.add_argument(
        "--metric",
        choices=["val_accuracy", "accuracy_delta", "size_ratio", "latency_ratio"],
        help="metric of the rule (default val_accuracy; lower is better for the ratios)",
    )
    g.add_argument("--threshold", type=float, metavar="VALUE", help="value the metric must reach")
    p.add_argument("--idempotency-key", help="a repeated request with the same key returns the same job")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return (watch with maas jobs watch)")
    p.add_argument(
        "--json", action="store_true", help="events as JSON lines, then the result (with --no-wait: the job)"
    )
    p.set_defaults(func=run)
