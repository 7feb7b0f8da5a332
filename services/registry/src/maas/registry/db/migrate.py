"""Schema migrations (Alembic), applied at start and by `maas-registry migrate`.

Several registry replicas may start at once against one PostgreSQL; the
shared runner (maas.common.sql.upgrade) serializes them with an advisory lock.
"""

from __future__ import annotations

import logging
from importlib import resources

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from maas.common import sql
from maas.registry.db.database import Database
from maas.registry.db.schema import Base

log = logging.getLogger("maas.registry.migrate")

_LOCK_KEY = 0x6D616173  # "maas"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("maas.registry") / "migrations"))
    return config


def upgrade(db: Database) -> str:
    """Bring the schema to head; returns the revision now applied."""
    return sql.upgrade(db, str(resources.files("maas.registry") / "migrations"), lock_key=_LOCK_KEY)


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current(db: Database) -> str:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() or ""


def drift(db: Database) -> list[object]:
    """Differences between the migrated schema and the ORM metadata (should be none)."""
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))
