"""`maas catalog ls|show NAME`: the trainer's architectures and data sets, built-in and from plugins."""

from __future__ import annotations

import argparse
import json
from typing import Any

from maas.cli.context import Context
from maas.cli.output import fields, print_json, table, to_dict
from maas.v1 import trainer_pb2 as pb

KINDS = ("architecture", "dataset")


def origin_text(entry: pb.CatalogEntry) -> str:
    """'built-in', or the distribution and version the entry comes from."""
    origin = entry.origin
    return "built-in" if origin.builtin else f"{origin.distribution} {origin.version}".strip()


def _dims(shape: Any) -> str:
    return "[" + ", ".join("*" if d == -1 else str(d) for d in shape) + "]"


def input_text(spec: pb.CatalogInput) -> str:
    """e.g. 'input FP32 [*, *, *] (square [C, H, W] images)'."""
    shape = "any shape" if spec.any_shape else _dims(spec.shape)
    return f"{spec.name} {spec.datatype} {shape}" + (f" ({spec.description})" if spec.description else "")


def bounds_text(arg: pb.CatalogArgument) -> str:
    """'[1, 64]', '(0, 1]', '>= 1', or '' when unbounded."""
    low = f"{arg.minimum:g}" if arg.HasField("minimum") else ""
    high = f"{arg.maximum:g}" if arg.HasField("maximum") else ""
    if low and high:
        return f"{'(' if arg.exclusive_minimum else '['}{low}, {high}{')' if arg.exclusive_maximum else ']'}"
    if low:
        return f"{'>' if arg.exclusive_minimum else '>='} {low}"
    if high:
        return f"{'<' if arg.exclusive_maximum else '<='} {high}"
    return ", ".join(arg.choices)


def ls(args: argparse.Namespace, ctx: Context) -> int:
    entries = ctx.trainer.list_catalog(args.kind or "")
    if ctx.json:
        print_json([to_dict(e) for e in entries])
        return 0
    rows = [
        (e.kind, e.name, origin_text(e), ", ".join(a.name for a in e.arguments) or "-") for e in entries if e.available
    ]
    table(["KIND", "NAME", "FROM", "ARGUMENTS"], rows, "no entries")
    refused = [e for e in entries if not e.available]
    if refused:
        print("\nunavailable:")
        for e in refused:
            print(f"  {e.kind} {e.name} ({origin_text(e)}): {e.unavailable_reason}")
    return 0


def show(args: argparse.Namespace, ctx: Context) -> int:
    entries = ctx.trainer.list_catalog(args.kind or "", args.name)
    if ctx.json:
        print_json([to_dict(e) for e in entries])
        return 0
    for i, e in enumerate(entries):
        if i:
            print()
        target = f" ({e.origin.target})" if e.origin.target else ""
        fields(
            [
                (e.kind, e.name),
                ("from", origin_text(e) + target),
                ("unavailable", e.unavailable_reason if not e.available else ""),
                ("description", e.description),
                ("inputs", "; ".join(input_text(i) for i in e.inputs)),
                ("path", {"required": "required (dataset.path)", "optional": "optional (dataset.path)"}.get(e.path)),
            ]
        )
        if e.arguments:
            print()
            rows = [
                (
                    a.name,
                    a.type,
                    "(required)" if a.required else json.dumps(json.loads(a.default_json)),
                    bounds_text(a),
                    a.description,
                )
                for a in e.arguments
            ]
            table(["ARGUMENT", "TYPE", "DEFAULT", "BOUNDS", "DESCRIPTION"], rows)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("catalog", help="architectures and data sets the trainer can use (built-in and plugins)")
    catalog = p.add_subparsers(dest="action", required=True, metavar="{ls,show}")
    c = catalog.add_parser("ls", parents=[common], help="every architecture and data set, with where it comes from")
    c.add_argument("--kind", choices=KINDS, help="only architectures or only data sets")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=ls)
    c = catalog.add_parser("show", parents=[common], help="one entry: its arguments (type, default, bounds), inputs")
    c.add_argument("name")
    c.add_argument("--kind", choices=KINDS, help="when an architecture and a data set share the name")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=show)
