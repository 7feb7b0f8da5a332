"""`maas versions archive|unarchive|rm REF`: what the registry's ArchiveVersion and DeleteVersion do.

Archiving hides a version from lists and from `latest`; a version an alias
points at cannot be archived (move the alias first). Deleting one an alias
points at is refused unless --force, which deletes those aliases too.
"""

from __future__ import annotations

import argparse
from typing import Any

from maas.cli import refs
from maas.cli.context import Context
from maas.cli.output import print_json, to_dict
from maas.common.errors import InvalidArgument
from maas.v1 import registry_pb2 as rpb

REF_HELP = "MODEL/VERSION or MODEL@ALIAS; or give MODEL and VERSION (a number or an alias) apart."


def _named(args: argparse.Namespace, ctx: Context) -> rpb.ModelVersion:
    """The version REF names; a bare MODEL (its latest READY version) is too easy a slip for these."""
    ref = refs.join(args.model, args.version or "")
    if not refs.parse(ref).version and refs.parse(ref).alias == "latest":
        raise InvalidArgument(f"reference: name the version ({ref[:60]}/VERSION or {ref[:60]}@ALIAS)")
    return refs.resolve(ctx.registry, ref)


def _archive(args: argparse.Namespace, ctx: Context, archived: bool) -> int:
    named = _named(args, ctx)
    version = ctx.registry.archive_version(named.model, named.version, archived)
    if ctx.json:
        print_json(to_dict(version))
    else:
        print(f"{version.model}/{version.version} {'archived' if archived else 'unarchived'}")
    return 0


def archive(args: argparse.Namespace, ctx: Context) -> int:
    return _archive(args, ctx, True)


def unarchive(args: argparse.Namespace, ctx: Context) -> int:
    return _archive(args, ctx, False)


def rm(args: argparse.Namespace, ctx: Context) -> int:
    named = _named(args, ctx)
    ctx.registry.delete_version(named.model, named.version, force=args.force)
    aliases = sorted(named.aliases)
    if ctx.json:
        print_json({"model": named.model, "version": named.version, "deleted": True, "aliases": aliases})
    else:
        also = f" and its aliases {', '.join(aliases)}" if aliases else ""
        print(f"deleted {named.model}/{named.version}{also}")
    return 0


def register(versions: Any, common: argparse.ArgumentParser) -> None:
    """Adds the commands to `maas versions`' subparsers."""
    for name, func, text in (
        ("archive", archive, "hide a version from lists and 'latest' (refused while an alias points at it)"),
        ("unarchive", unarchive, "restore an archived version"),
        ("rm", rm, "delete a version and its artifact (refused while an alias points at it, unless --force)"),
    ):
        c = versions.add_parser(name, parents=[common], help=text, description=REF_HELP)
        c.add_argument("model", metavar="REF")
        c.add_argument("version", nargs="?", help="a number or an alias")
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=func)
    c.add_argument("--force", action="store_true", help="also delete the aliases that point at it")
