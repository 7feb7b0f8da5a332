"""Alembic environment: run with a connection handed in by maas.registry.db.migrate."""

from __future__ import annotations

from alembic import context

from maas.registry.db.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
