"""`maas versions ls|show|download` (archive|unarchive|rm: version_edits) and `maas alias set|rm`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from maas.cli import model_card, refs, version_edits
from maas.cli.context import Context
from maas.cli.model_card import human_bytes
from maas.cli.output import print_json, table, to_dict, when
from maas.client.registry import FORMATS, VERSION_STATUSES
from maas.common.errors import InvalidArgument
from maas.common.metric_direction import lower_is_better
from maas.v1 import registry_pb2 as rpb


def ls(args: argparse.Namespace, ctx: Context) -> int:
    statuses = []
    for name in args.status or []:
        if name.lower() not in VERSION_STATUSES:
            raise InvalidArgument(f"--status: one of {', '.join(VERSION_STATUSES)}")
        statuses.append(VERSION_STATUSES[name.lower()])
    order = rpb.VERSION_ORDER_NEWEST
    if args.order_by:
        ascending = lower_is_better(args.order_by) if args.ascending is None else args.ascending
        order = rpb.VERSION_ORDER_METRIC_ASC if ascending else rpb.VERSION_ORDER_METRIC_DESC
    versions = ctx.registry.versions(
        args.model,
        statuses=statuses,
        order=order,
        order_metric=args.order_by or "",
        include_archived=args.archived,
        limit=args.limit,
    )
    if ctx.json:
        print_json([to_dict(v) for v in versions])
        return 0
    metric = args.order_by or "val_accuracy"
    rows = [
        (
            v.version,
            refs.status_name(v.status) + (" (archived)" if v.archived else ""),
            refs.format_name(v.format),
            f"{v.metrics[metric]:.4f}" if metric in v.metrics else "",
            ", ".join(v.aliases),
            human_bytes(v.size_bytes) if v.size_bytes else "",
            when(v.created_at),
        )
        for v in versions
    ]
    table(["VERSION", "STATUS", "FORMAT", metric.upper(), "ALIASES", "SIZE", "CREATED"], rows, "no versions")
    return 0


def show(args: argparse.Namespace, ctx: Context) -> int:
    version = refs.resolve(ctx.registry, refs.join(args.model, args.version or ""))
    if ctx.json:
        print_json(to_dict(version))
        return 0
    print(model_card.render(version))
    return 0


SUFFIXES = {
    rpb.MODEL_FORMAT_SAFETENSORS: ".safetensors",
    rpb.MODEL_FORMAT_ONNX: ".onnx",
    rpb.MODEL_FORMAT_ORT: ".ort",
    rpb.MODEL_FORMAT_PTE: ".pte",
    rpb.MODEL_FORMAT_TOKENIZER: ".tokenizer.json",
}


def download(args: argparse.Namespace, ctx: Context) -> int:
    version = refs.resolve(ctx.registry, refs.join(args.model, args.version or ""))
    fmt = FORMATS[args.format] if args.format else version.format
    suffix = SUFFIXES.get(fmt, ".bin")
    dest = Path(args.output) if args.output else Path(f"{version.model}-{version.version}{suffix}")
    if dest.is_dir():
        dest = dest / f"{version.model}-{version.version}{suffix}"
    info = ctx.registry.download(version.model, version.version, dest, format=fmt)
    if args.architecture and info.format == rpb.MODEL_FORMAT_SAFETENSORS:
        arch_path = dest.with_suffix(".json")
        arch_path.write_text(json.dumps(to_dict(version)["architecture"], indent=2) + "\n")
    if ctx.json:
        print_json(
            {
                "path": str(dest),
                "size_bytes": info.size_bytes,
                "sha256": info.sha256,
                "format": refs.format_name(info.format),
                "model": version.model,
                "version": version.version,
            }
        )
    else:
        print(f"{dest}  {human_bytes(info.size_bytes)}  sha256 {info.sha256}")
    return 0


def alias_set(args: argparse.Namespace, ctx: Context) -> int:
    if not str(args.version).isdigit():
        raise InvalidArgument(f"version: expected a number, got '{str(args.version)[:40]}'")
    alias = ctx.registry.set_alias(args.model, args.alias, int(args.version))
    if ctx.json:
        print_json(to_dict(alias))
    else:
        was = f" (was {alias.previous_version})" if alias.previous_version else ""
        print(f"{alias.model}@{alias.alias} -> {alias.version}{was}")
    return 0


def alias_rm(args: argparse.Namespace, ctx: Context) -> int:
    ctx.registry.delete_alias(args.model, args.alias)
    if not ctx.json:
        print(f"{args.model}@{args.alias} removed")
    else:
        print_json({"model": args.model, "alias": args.alias, "deleted": True})
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("versions", help="model versions")
    versions = p.add_subparsers(dest="action", required=True, metavar="{ls,show,download,archive,unarchive,rm}")
    c = versions.add_parser("ls", parents=[common], help="versions of a model, newest first")
    c.add_argument("model")
    c.add_argument("--status", action="append", metavar="STATUS", help="pending, ready or failed")
    c.add_argument(
        "--order-by",
        metavar="METRIC",
        help="best first by this metric: lowest first for a loss or error (val_loss, mse, ...), "
        "highest first for the rest (val_accuracy, ...)",
    )
    direction = c.add_mutually_exclusive_group()
    direction.add_argument(
        "--asc", "--ascending", dest="ascending", action="store_const", const=True, help="with --order-by: lowest first"
    )
    direction.add_argument("--desc", dest="ascending", action="store_const", const=False, help="highest first")
    c.add_argument("--archived", action="store_true", help="include archived versions")
    c.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=ls)
    for name, func, text in (("show", show, "one version"), ("download", download, "a version's artifact")):
        c = versions.add_parser(
            name,
            parents=[common],
            help=text,
            description="REF is MODEL, MODEL@ALIAS or MODEL/VERSION; "
            "or give MODEL and VERSION (a number or an alias) apart.",
        )
        c.add_argument("model", metavar="REF")
        c.add_argument("version", nargs="?", help="a number or an alias")
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=func)
    c.add_argument("-o", "--output", metavar="PATH", help="file or folder (default MODEL-VERSION.FORMAT)")
    c.add_argument(
        "--format",
        choices=sorted(FORMATS),
        help="which artifact (default: the version's primary one; `maas versions show` lists them)",
    )
    c.add_argument("--architecture", action="store_true", help="also write the architecture as PATH.json")
    version_edits.register(versions, common)

    p = sub.add_parser("alias", help="point aliases (production, staging, ...) at versions")
    aliases = p.add_subparsers(dest="action", required=True, metavar="{set,rm}")
    c = aliases.add_parser("set", parents=[common], help="create or move an alias (the version must be READY)")
    c.add_argument("model")
    c.add_argument("alias")
    c.add_argument("version")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=alias_set)
    c = aliases.add_parser("rm", parents=[common], help="delete an alias")
    c.add_argument("model")
    c.add_argument("alias")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=alias_rm)
