"""`maas models ls|show|create|edit|rm`."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli.context import Context
from maas.cli.output import fields, print_json, table, to_dict, when
from maas.cli.refs import format_name, status_name
from maas.cli.train import key_values
from maas.common.errors import InvalidArgument
from maas.v1 import registry_pb2 as rpb


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


def _tags(items: list[str] | None, flag: str = "--tag") -> dict[str, str]:
    """KEY=VALUE pairs, the value as typed (tags are text)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{flag}: expected KEY=VALUE, got '{item[:60]}'")
        out[key] = value
    return out


def _print_model(model: rpb.Model, ctx: Context, done: str) -> None:
    if ctx.json:
        print_json(to_dict(model))
        return
    tags = ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items()))
    print(f"{done} model {model.name}" + (f" (tags {tags})" if tags else ""))


def create(args: argparse.Namespace, ctx: Context) -> int:
    model = ctx.registry.create_model(args.model, args.description or "", _tags(args.tag))
    _print_model(model, ctx, "created")
    return 0


def edit(args: argparse.Namespace, ctx: Context) -> int:
    set_tags = _tags(args.tag)
    for key in args.untag or []:
        if key in set_tags:
            raise InvalidArgument(f"--untag: '{key[:60]}' is also given to --tag")
    model = ctx.registry.update_model(
        args.model, description=args.description, set_tags=set_tags, delete_tags=args.untag or []
    )
    _print_model(model, ctx, "updated")
    return 0


def rm(args: argparse.Namespace, ctx: Context) -> int:
    """Without --force the registry refuses a model with READY versions or aliases, naming them."""
    model = ctx.registry.get_model(args.model)
    versions = ctx.registry.versions(args.model, include_archived=True) if args.force else []
    ctx.registry.delete_model(args.model, force=args.force)
    ready = [v.version for v in versions if v.status == rpb.VERSION_STATUS_READY]
    if ctx.json:
        print_json(
            {
                "model": model.name,
                "deleted": True,
                "versions": sorted(v.version for v in versions),
                "ready_versions": sorted(ready),
                "aliases": dict(sorted(model.aliases.items())),
            }
        )
        return 0
    what = [f"{len(versions)} version{'' if len(versions) == 1 else 's'} ({len(ready)} READY)"]
    if model.aliases:
        what.append("aliases " + ", ".join(f"{a}->{v}" for a, v in sorted(model.aliases.items())))
    print(f"deleted model {model.name}" + (f" with {' and '.join(what)}" if args.force else ""))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", help="registered models")
    models = p.add_subparsers(dest="action", required=True, metavar="{ls,show,create,edit,rm}")
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
    c = models.add_parser("create", parents=[common], help="register a model name (versions come later)")
    c.add_argument("model", metavar="NAME")
    c.add_argument("--description", metavar="TEXT")
    c.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a tag (repeatable)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=create)
    c = models.add_parser("edit", parents=[common], help="change a model's description or tags")
    c.add_argument("model", metavar="NAME")
    c.add_argument("--description", metavar="TEXT", help="the new description")
    c.add_argument("--tag", action="append", metavar="KEY=VALUE", help="set a tag (repeatable)")
    c.add_argument("--untag", action="append", metavar="KEY", help="remove a tag (repeatable)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=edit)
    c = models.add_parser(
        "rm",
        parents=[common],
        help="delete a model with its versions and aliases",
        description="A model with READY versions or aliases is refused (the message lists them) unless --force.",
    )
    c.add_argument("model", metavar="NAME")
    c.add_argument("--force", action="store_true", help="delete its versions, artifacts and aliases too")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=rm)
