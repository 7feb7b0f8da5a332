"""`maas train`: a job from flags and/or a YAML/JSON spec file, optionally watched to its end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from maas.cli.context import Context
from maas.cli.output import print_json, to_dict
from maas.cli.watch import job_title, watch
from maas.client.specs import job_spec, load_document, merge
from maas.common.errors import InvalidArgument

# flag destination -> path in the JobSpec document
SCALARS: dict[str, tuple[str, ...]] = {
    "model": ("model", "name"),
    "dataset": ("dataset", "name"),
    "dataset_path": ("dataset", "path"),
    "optimizer": ("optimizer", "name"),
    "lr": ("optimizer", "lr"),
    "momentum": ("optimizer", "momentum"),
    "weight_decay": ("optimizer", "weight_decay"),
    "schedule": ("schedule", "name"),
    "step_size": ("schedule", "step_size"),
    "gamma": ("schedule", "gamma"),
    "epochs": ("epochs",),
    "batch_size": ("batch_size",),
    "validation_split": ("validation_split",),
    "seed": ("seed",),
    "world_size": ("world_size",),
    "max_runtime": ("max_runtime_seconds",),
    "max_retries": ("max_retries",),
    "threads": ("threads",),
    "early_stopping": ("early_stopping", "metric"),
    "patience": ("early_stopping", "patience"),
    "register_as": ("register_as",),
    "promote": ("promotion", "alias"),
    "promote_metric": ("promotion", "metric"),
    "promote_threshold": ("promotion", "threshold"),
    "description": ("description",),
    "pretrained": ("pretrained", "path"),
    "pretrained_sha256": ("pretrained", "sha256"),
    "freeze_backbone": ("freeze_backbone",),
    "pretrained_checkpoint": ("pretrained_checkpoint", "path"),
}


def key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs; values are YAML scalars or lists (hidden=[256,128], lr=0.1, name=x)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{flag}: expected KEY=VALUE, got '{item}'")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise InvalidArgument(f"{flag}: cannot read the value of '{key}'") from None
    return out


def spec_document(args: argparse.Namespace) -> dict[str, Any]:
    doc = load_document(Path(args.spec)) if args.spec else {}
    overrides: dict[str, Any] = {}
    for dest, path in SCALARS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if args.model_arg:
        overrides.setdefault("model", {})["args"] = key_values(args.model_arg, "--model-arg")
    if args.dataset_arg:
        overrides.setdefault("dataset", {})["args"] = key_values(args.dataset_arg, "--dataset-arg")
    if args.checkpoint_sha256:
        pins = dict(item.partition("=")[::2] for item in args.checkpoint_sha256)  # hex digits stay text
        overrides.setdefault("pretrained_checkpoint", {})["sha256"] = pins
    if args.tag:
        overrides["tags"] = {k: str(v) for k, v in key_values(args.tag, "--tag").items()}
    return merge(doc, overrides)


def run(args: argparse.Namespace, ctx: Context) -> int:
    doc = spec_document(args)
    if not (doc.get("model") or {}).get("name") or not (doc.get("dataset") or {}).get("name"):
        raise InvalidArgument("a job needs a model and a data set (--model and --dataset, or a --spec file)")
    spec = job_spec(doc)
    job = ctx.trainer.submit(spec, args.idempotency_key or "")
    if args.watch:
        if not ctx.json:
            print(f"submitted job {job.job_id}: {job_title(job.spec)}, {job.spec.epochs} epochs")
        return watch(ctx, job.job_id, title=job_title(job.spec))
    if ctx.json:
        print_json(to_dict(job))
    else:
        print(job.job_id)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="submit a training job (from flags and/or a spec file)",
        description="Submit a declarative training job. A --spec file (YAML or JSON, the JobSpec fields) "
        "gives the base; flags override it.",
        epilog="example: maas train --model mlp --dataset digits --epochs 20 --register-as digits "
        "--promote production --watch",
    )
    p.add_argument("-f", "--spec", metavar="FILE", help="YAML or JSON job spec")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="catalog model: mlp, lenet, resnet18, mobilenet_v3_small, ...")
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model argument, e.g. hidden=[256,128]")
    g.add_argument("--dataset", help="digits, cifar10, mnist, fashion_mnist, imagefolder, fake, text, bbc_news")
    g.add_argument("--dataset-path", help="imagefolder, text: a folder or file under the trainer's data root")
    g.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="data set argument")
    g = p.add_argument_group("fine-tuning")
    g.add_argument(
        "--pretrained",
        metavar="PATH",
        help="start from a weights file under the trainer's data root: a safetensors state dict, or a torchvision "
        "NAME-<sha256 prefix>.pth; the classifier head is replaced by one sized to the data set's classes",
    )
    g.add_argument("--pretrained-sha256", metavar="HEX", help="the weights file's full sha256, to pin it")
    g.add_argument(
        "--freeze-backbone",
        action="store_true",
        default=None,
        help="with --pretrained: train only the new head (the backbone and its BatchNorm statistics stay as loaded)",
    )
    g.add_argument(
        "--pretrained-checkpoint",
        metavar="FOLDER",
        help="a text encoder (bert, distilbert, roberta) starts from this checkpoint under the trainer's data root "
        "(config.json + model.safetensors + tokenizer.json): its config sets the sizes, its tokenizer is used",
    )
    g.add_argument(
        "--checkpoint-sha256",
        action="append",
        metavar="FILE=HEX",
        help="pin a checkpoint file's sha256, e.g. model.safetensors=<64 hex digits>",
    )
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=["none", "step", "cosine", "exponential"])
    g.add_argument("--step-size", type=int, help="step schedule: epochs per decay")
    g.add_argument("--gamma", type=float, help="schedule decay factor")
    g.add_argument("--validation-split", type=float, help="fraction held out for validation (default 0.1)")
    g.add_argument("--seed", type=int)
    g.add_argument("--world-size", type=int, help="processes in the torch.distributed group")
    g.add_argument("--threads", type=int, help="torch threads per process")
    g.add_argument("--max-runtime", type=int, metavar="SECONDS")
    g.add_argument("--max-retries", type=int, help="restarts from the last checkpoint after a crash")
    g.add_argument("--early-stopping", metavar="METRIC", help="e.g. val_loss")
    g.add_argument("--patience", type=int, help="epochs without improvement before stopping")
    g = p.add_argument_group("registration")
    g.add_argument("--register-as", metavar="MODEL", help="registry model to register the result under")
    g.add_argument("--promote", metavar="ALIAS", help="alias to move when the rule passes, e.g. production")
    g.add_argument("--promote-metric", metavar="METRIC", help="metric of the rule (default val_accuracy)")
    g.add_argument("--promote-threshold", type=float, metavar="VALUE", help="value the metric must reach")
    g.add_argument("--description")
    g.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--idempotency-key", help="a repeated submit with the same key returns the same job")
    p.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="show live progress; exit 0 only if the job SUCCEEDED and its version is READY",
    )
    p.add_argument("--json", action="store_true", help="print the job as JSON (with --watch: events as JSON lines)")
    p.set_defaults(func=run)
