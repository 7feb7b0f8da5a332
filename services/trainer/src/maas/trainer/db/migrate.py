"""The trainer's schema migrations (its own Alembic version table)."""

from __future__ import annotations

from importlib import resources

from maas.common import sql
from maas.common.sql import Database

VERSION_TABLE = "trainer_alembic_version"
_LOCK_KEY = 0x6D61_7472  # "matr"


def upgrade(db: Database) -> str:
    return sql.upgrade(
        db, str(resources.files("maas.trainer") / "migrations"), lock_key=_LOCK_KEY, version_table=VERSION_TABLE
    )
