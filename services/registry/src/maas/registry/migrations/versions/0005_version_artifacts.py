"""version_artifacts: a version holds one or more artifacts (format, size, sha256).

The primary artifact stays on model_versions (format, size_bytes, sha256) and
is also a row here; every READY version's primary artifact is copied in, so
that reads list it and blob deletes see it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "version_artifacts",
        sa.Column("version_id", Id, nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_version_artifacts_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "format", name=op.f("pk_version_artifacts")),
    )
    op.create_index(op.f("ix_version_artifacts_sha256"), "version_artifacts", ["sha256"], unique=False)
    op.execute(
        "INSERT INTO version_artifacts (version_id, format, size_bytes, sha256, created_at_ms) "
        "SELECT id, format, size_bytes, sha256, ready_at_ms FROM model_versions "
        "WHERE status = 'READY' AND sha256 <> ''"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_version_artifacts_sha256"), table_name="version_artifacts")
    op.drop_table("version_artifacts")
