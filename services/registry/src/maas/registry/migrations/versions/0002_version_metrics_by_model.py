"""version_metrics.model_id and an index (model_id, key, value) for lists ordered by a metric.

ListVersions ordered by a metric read the model's versions through the
(key, value) index across all models, or sorted the whole model; with the
model in the index a page is a short ordered index walk on both backends.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("version_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_id", Id, nullable=True))
    op.execute(
        "UPDATE version_metrics SET model_id = "
        "(SELECT model_versions.model_id FROM model_versions WHERE model_versions.id = version_metrics.version_id)"
    )
    with op.batch_alter_table("version_metrics", schema=None) as batch_op:
        batch_op.alter_column("model_id", existing_type=Id, nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_version_metrics_model_id_registered_models"),
            "registered_models",
            ["model_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.drop_index(batch_op.f("ix_version_metrics_key_value"))
        batch_op.create_index(
            batch_op.f("ix_version_metrics_model_id_key_value"), ["model_id", "key", "value"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("version_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_version_metrics_model_id_key_value"))
        batch_op.create_index(batch_op.f("ix_version_metrics_key_value"), ["key", "value"], unique=False)
        batch_op.drop_constraint(batch_op.f("fk_version_metrics_model_id_registered_models"), type_="foreignkey")
        batch_op.drop_column("model_id")
