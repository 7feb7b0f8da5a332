"""Deployments: deployments, deployment_targets, deployment_replicas; events.deployment and events.generation.

A deployment is a served name with its targets (traffic weights), an optional
shadow, serving options and a generation; each change is an event naming the
deployment and its generation. Replicas' reports of what they serve are kept
per replica. Events written before 0007 name no deployment ("", 0).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deployment", sa.String(length=128), server_default="", nullable=False))
        batch_op.add_column(sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "deployments",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("options_json", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("name", name=op.f("uq_deployments_name")),
    )
    op.create_table(
        "deployment_targets",
        sa.Column("deployment_id", Id, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_targets_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", "position", name=op.f("pk_deployment_targets")),
    )
    op.create_index(op.f("ix_deployment_targets_model"), "deployment_targets", ["model"], unique=False)
    op.create_table(
        "deployment_replicas",
        sa.Column("deployment_id", Id, nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("targets_json", sa.Text(), nullable=False),
        sa.Column("reported_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_replicas_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", "replica", name=op.f("pk_deployment_replicas")),
    )


def downgrade() -> None:
    op.drop_table("deployment_replicas")
    op.drop_index(op.f("ix_deployment_targets_model"), table_name="deployment_targets")
    op.drop_table("deployment_targets")
    op.drop_table("deployments")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("generation")
        batch_op.drop_column("deployment")
