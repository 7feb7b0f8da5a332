"""Alembic environment of the trainer: run with a connection from maas.common.sql.upgrade."""

from __future__ import annotations

from alembic import context

from maas.trainer.db.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=context.config.attributes.get("version_table", "trainer_alembic_version"),
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
