"""model_versions.upload_seen_at_ms and an index (status, created_at_ms) for abandoned uploads.

A PENDING version whose upload neither finished nor received bytes for
MAAS_REGISTRY_PENDING_VERSION_SECONDS becomes FAILED ("upload abandoned").
Replicas record upload activity in the new column, so one replica never fails
a version another is still receiving; existing versions start at 0 (never).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upload_seen_at_ms", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.create_index(
            batch_op.f("ix_model_versions_status_created_at_ms"), ["status", "created_at_ms"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_status_created_at_ms"))
        batch_op.drop_column("upload_seen_at_ms")
