"""`python -m maas.trainer [serve|migrate]` (also the `maas-trainer` script)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from maas.common.server import configure_logging, serve_forever
from maas.trainer.settings import TrainerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas-trainer", description="The maas trainer service.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = TrainerSettings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        from maas.common.sql import Database, redact
        from maas.trainer.db import migrate

        db = Database(settings.resolved_database_url())
        revision = migrate.upgrade(db)
        print(f"database {redact(db.url)} at revision {revision}")
        db.dispose()
        return 0

    from maas.trainer.app import TrainerApp

    asyncio.run(serve_forever(settings, TrainerApp(settings), name="trainer"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
