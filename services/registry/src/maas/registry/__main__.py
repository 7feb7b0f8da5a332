"""`python -m maas.registry [serve|migrate]` (also the `maas-registry` script)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from maas.common.server import configure_logging, serve_forever
from maas.registry.settings import RegistrySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas-registry", description="The maas registry service.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = RegistrySettings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        from maas.registry.db import migrate
        from maas.registry.db.database import Database, redact

        db = Database(settings.resolved_database_url())
        revision = migrate.upgrade(db)
        print(f"database {redact(db.url)} at revision {revision}")
        db.dispose()
        return 0

    from maas.registry.app import RegistryApp

    asyncio.run(serve_forever(settings, RegistryApp(settings), name="registry"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
