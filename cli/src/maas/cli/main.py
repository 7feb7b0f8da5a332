"""`maas`: the command line of the suite."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from maas.cli.suite import SERVICES, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas", description="Train, register, promote and serve PyTorch models.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start registry, trainer and inference on this machine (Ctrl-C stops all)")
    up.add_argument("--only", nargs="+", choices=[s.name for s in SERVICES], help="start only these services")
    serve = sub.add_parser("serve", help="run one service in the foreground (what a container runs)")
    serve.add_argument("service", choices=[s.name for s in SERVICES])
    migrate = sub.add_parser("migrate", help="apply database migrations of a service and exit")
    migrate.add_argument("service", choices=["registry", "trainer"])
    args = parser.parse_args(argv)

    if args.command == "up":
        return asyncio.run(run_suite(args.only or [s.name for s in SERVICES]))
    module = next(s.module for s in SERVICES if s.name == args.service)
    action = "serve" if args.command == "serve" else "migrate"
    os.execv(sys.executable, [sys.executable, "-m", module, action])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
