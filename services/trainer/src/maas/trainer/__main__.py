"""`python -m maas.trainer [serve|migrate]` (also the `maas-trainer` script)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from maas.common.server import App, database_service_main
from maas.trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from maas.common.sql import Database


def _app(settings: TrainerSettings) -> App:
    from maas.trainer.app import TrainerApp

    return TrainerApp(settings)


def _upgrade(db: Database) -> str:
    from maas.trainer.db import migrate

    return migrate.upgrade(db)


def main(argv: list[str] | None = None) -> int:
    return database_service_main(
        argv,
        name="trainer",
        settings=TrainerSettings,
        database_url=TrainerSettings.resolved_database_url,
        app=_app,
        upgrade=_upgrade,
    )


if __name__ == "__main__":
    sys.exit(main())
