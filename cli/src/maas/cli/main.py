"""`maas`: the command line of the suite.

Every command talks to the services through `maas.client`; failures print one
line on stderr and exit non-zero (1: the operation failed, 2: bad usage,
130: interrupted). MAAS_DEBUG=1 shows tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from maas.cli import catalog, deployments, jobs, metrics, models, optimize, predict, push, serving, train, versions
from maas.cli.context import Context, add_global_options
from maas.cli.output import error_line
from maas.cli.suite import SERVICES, run_suite
from maas.cli.tlshint import tls_mismatch
from maas.common.errors import MaasError, Unavailable

COMMANDS = (train, optimize, jobs, catalog, models, versions, push, predict, metrics, serving, deployments)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maas",
        description="Train, register, promote and serve PyTorch models.",
        epilog="`maas COMMAND --help` describes each command.",
    )
    add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start registry, trainer and inference on this machine (Ctrl-C stops all)")
    up.add_argument("--only", nargs="+", choices=[s.name for s in SERVICES], help="start only these services")
    serve = sub.add_parser("serve", help="run one service in the foreground (what a container runs)")
    serve.add_argument("service", choices=[s.name for s in SERVICES])
    migrate = sub.add_parser("migrate", help="apply database migrations of a service and exit")
    migrate.add_argument("service", choices=["registry", "trainer"])
    for command in COMMANDS:
        command.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        return asyncio.run(run_suite(args.only or [s.name for s in SERVICES]))
    if args.command in ("serve", "migrate"):
        module = next(s.module for s in SERVICES if s.name == args.service)
        action = "serve" if args.command == "serve" else "migrate"
        os.execv(sys.executable, [sys.executable, "-m", module, action])
    ctx: Context | None = None
    try:
        ctx = Context(args)
        return int(args.func(args, ctx))
    except MaasError as exc:
        hint = tls_mismatch(exc.message, ctx.endpoints, ctx.opened()) if isinstance(exc, Unavailable) and ctx else None
        print(f"maas: {hint or error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("maas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `maas ... | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as exc:
        if os.environ.get("MAAS_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"maas: internal error: {type(exc).__name__}: {text} (MAAS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
