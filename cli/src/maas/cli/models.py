"""`maas models ls|show`."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.context import Context
from maas.cli.output import fields, print_json, table, to_dict, when
from maas.cli.refs import format_name, status_name
from maas.cli.train import key_values


def ls(args: argparse.Namespace, ctx: Context) -> int:
    tags = {k: str(v) for k, v in key_values(args.tag, "--tag").items()}
    models = []
    for model in ctx.registry.models(args.prefix or "", tags):
        models.append(model)
        if args.limit and len(models) >= args.limit:
            break
    if ctx.json:
        print_json([to_dict(m) for m in models])
        return 0
    rows = [
        (
            m.name,
            m.latest_version,
            ", ".join(f"{a}->{v}" for a, v in sorted(m.aliases.items())),
            ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items())),
            when(m.updated_at or m.created_at),
        )
        for m in models
    ]
    table(["MODEL", "LATEST", "ALIASES", "TAGS", "UPDATED"], rows, "no models")
    return 0


def show(args: argparse.Namespace, ctx: Context) -> int:
    model = ctx.registry.get_model(args.model)
    versions = ctx.registry.versions(args.model, limit=args.versions)
    if ctx.json:
        print_json({"model": to_dict(model), "versions": [to_dict(v) for v in versions]})
        return 0
    fields(
        [
            ("model", model.name),
            ("description", model.description),
            ("tags", ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items()))),
            ("aliases", ", ".join(f"{a} -> {v}" for a, v in sorted(model.aliases.items()))),
            ("latest version", model.latest_version),
            ("created", when(model.created_at)),
        ]
    )
    print()
    rows = [
        (
            v.version,
            status_name(v.status),
            format_name(v.format),
            f"{v.metrics['val_accuracy']:.4f}" if "val_accuracy" in v.metrics else "",
            ", ".join(v.aliases),
            when(v.created_at),
        )
        for v in versions
    ]
    table(["VERSION", "STATUS", "FORMAT", "VAL_ACC", "ALIASES", "CREATED"], rows, "no versions")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", help="registered models")
    models = p.add_subparsers(dest="action", required=True, metavar="{ls,show}")
    c = models.add_parser("ls", parents=[common], help="list registered models")
    c.add_argument("--prefix", help="only names starting with this")
    c.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only models with this tag")
    c.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=ls)
    c = models.add_parser("show", parents=[common], help="a model, its aliases and latest versions")
    c.add_argument("model")
    c.add_argument("--versions", type=int, default=10, metavar="N", help="show the N newest versions (default 10)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=show)
