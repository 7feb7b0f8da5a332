"""Initial schema: jobs and their event logs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trainer_jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("registered_model", sa.String(length=128), nullable=False),
        sa.Column("registered_version", sa.BigInteger(), nullable=False),
        sa.Column("promoted_alias", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("heartbeat_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("synced_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trainer_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_trainer_jobs_idempotency_key")),
        sa.UniqueConstraint("job_id", name=op.f("uq_trainer_jobs_job_id")),
    )
    with op.batch_alter_table("trainer_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trainer_jobs_state_id"), ["state", "id"], unique=False)

    op.create_table(
        "trainer_job_events",
        sa.Column("job_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_pk"], ["trainer_jobs.id"], name=op.f("fk_trainer_job_events_job_pk_trainer_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_pk", "seq", name=op.f("pk_trainer_job_events")),
    )


def downgrade() -> None:
    op.drop_table("trainer_job_events")
    with op.batch_alter_table("trainer_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trainer_jobs_state_id"))

    op.drop_table("trainer_jobs")
