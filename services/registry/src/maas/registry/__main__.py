"""`python -m maas.registry [serve|migrate]` (also the `maas-registry` script)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from maas.common.server import App, database_service_main
from maas.registry.settings import RegistrySettings

if TYPE_CHECKING:
    from maas.common.sql import Database


def _app(settings: RegistrySettings) -> App:
    from maas.registry.app import RegistryApp

    return RegistryApp(settings)


def _upgrade(db: Database) -> str:
    from maas.registry.db import migrate

    return migrate.upgrade(db)


def main(argv: list[str] | None = None) -> int:
    return database_service_main(
        argv,
        name="registry",
        settings=RegistrySettings,
        database_url=RegistrySettings.resolved_database_url,
        app=_app,
        upgrade=_upgrade,
    )


if __name__ == "__main__":
    sys.exit(main())
