"""`maas serving ls|load|unload` and `maas status`: what the inference service serves, and who is up."""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli import refs
from maas.cli.context import Context
from maas.cli.health import check
from maas.cli.output import print_json, table
from maas.client.config import SERVICES


def ls(args: argparse.Namespace, ctx: Context) -> int:
    models = ctx.inference.repository_index()
    rows = [{"model": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in models]
    if ctx.json:
        print_json(rows)
    else:
        table(["MODEL", "VERSION", "STATE", "REASON"], [tuple(r.values()) for r in rows], "nothing served")
    return 0


def load(args: argparse.Namespace, ctx: Context) -> int:
    ref = refs.parse(args.ref)
    alias = "" if ref.version else (ref.alias if "@" in args.ref else "")
    ctx.inference.load(ref.model, alias=alias, version=ref.version, timeout=args.wait)
    served = [m for m in ctx.inference.repository_index() if m.name == ref.model]
    version = served[0].version if served else ""
    if ctx.json:
        print_json({"model": ref.model, "version": version, "alias": alias, "state": served[0].state if served else ""})
    else:
        follows = (
            f" (following @{alias})"
            if alias
            else (" (pinned)" if ref.version else " (following production, or its latest READY version)")
        )
        print(f"{ref.model}/{version} is served{follows}")
    return 0


def unload(args: argparse.Namespace, ctx: Context) -> int:
    ctx.inference.unload(args.model)
    if ctx.json:
        print_json({"model": args.model, "unloaded": True})
    else:
        print(f"{args.model} unloaded")
    return 0


def status(args: argparse.Namespace, ctx: Context) -> int:
    rows = [
        (name, ctx.endpoints.address(name), check(ctx.endpoints.address(name), timeout=args.wait)) for name in SERVICES
    ]
    if ctx.json:
        print_json([{"service": s, "address": a, "status": st} for s, a, st in rows])
    else:
        table(["SERVICE", "ADDRESS", "HEALTH"], rows)
    return 0 if all(st == "SERVING" for _, _, st in rows) else 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serving", help="models the inference service serves")
    serving = p.add_subparsers(dest="action", required=True, metavar="{ls,load,unload}")
    c = serving.add_parser("ls", parents=[common], help="served models and their state")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=ls)
    c = serving.add_parser(
        "load",
        parents=[common],
        help="serve a model on every inference replica: writes the deployment MODEL (MODEL follows production, "
        "or its latest READY version without one; MODEL@ALIAS follows ALIAS; MODEL/VERSION pins a version)",
    )
    c.add_argument("ref", metavar="MODEL[@ALIAS|/VERSION]")
    c.add_argument("--wait", type=float, default=120.0, metavar="SECONDS", help="how long loading may take")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=load)
    c = serving.add_parser("unload", parents=[common], help="stop serving a model (deletes its deployment)")
    c.add_argument("model")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=unload)
    c = sub.add_parser("status", parents=[common], help="health of the three services (grpc.health.v1)")
    c.add_argument("--wait", type=float, default=3.0, metavar="SECONDS", help="deadline of each check")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=status)
