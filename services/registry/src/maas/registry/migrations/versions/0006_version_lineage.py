"""model_versions.lineage_json: where a version came from (source, job, parent, data set, software).

Stored as given at CreateVersion, as canonical JSON text read back with the
version in the same statement. Versions registered before 0006 have none ("").

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lineage_json", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("lineage_json")
