"""Metric points stored column-wise in chunks (metric_chunks) instead of a row per point.

A row and an index entry per point bounded ingestion and history reads by
per-row costs; a chunk packs up to 16,384 points of one (run, key). Existing
points are moved over, sorted, then metric_points is dropped.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CHUNK_POINTS = 16_384


def _pack(typecode: str, items: list[Any]) -> bytes:
    data = array(typecode, items)
    if sys.byteorder != "little":
        data.byteswap()
    return data.tobytes()


def upgrade() -> None:
    chunks = op.create_table(
        "metric_chunks",
        sa.Column("id", Id, nullable=False),
        sa.Column("run_pk", Id, nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("step_data", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp_data", sa.LargeBinary(), nullable=False),
        sa.Column("value_data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_metric_chunks_run_pk_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_chunks")),
    )
    with op.batch_alter_table("metric_chunks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_metric_chunks_run_pk_key_first_step"), ["run_pk", "key", "first_step"], unique=False
        )

    # Move the points over, one (run, key) after the other, in order.
    bind = op.get_bind()
    result = bind.execute(
        sa.text(
            "SELECT run_pk, key, step, timestamp_ms, value FROM metric_points "
            "ORDER BY run_pk, key, step, timestamp_ms, value"
        ).execution_options(stream_results=True, yield_per=CHUNK_POINTS)
    )
    group: tuple[Any, Any] | None = None
    steps: list[int] = []
    stamps: list[int] = []
    values: list[float] = []

    def flush() -> None:
        if group is not None and steps:
            op.bulk_insert(
                chunks,
                [
                    {
                        "run_pk": group[0],
                        "key": group[1],
                        "first_step": steps[0],
                        "last_step": steps[-1],
                        "points": len(steps),
                        "step_data": _pack("q", steps),
                        "timestamp_data": _pack("q", stamps),
                        "value_data": _pack("d", values),
                    }
                ],
            )
        steps.clear()
        stamps.clear()
        values.clear()

    for run_pk, key, step, stamp, value in result:
        if (run_pk, key) != group or len(steps) == CHUNK_POINTS:
            flush()
            group = (run_pk, key)
        steps.append(step)
        stamps.append(stamp)
        values.append(value)
    flush()

    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_points_run_pk_key_step"))
    op.drop_table("metric_points")


def downgrade() -> None:
    points = op.create_table(
        "metric_points",
        sa.Column("run_pk", Id, nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_metric_points_run_pk_runs"), ondelete="CASCADE"),
    )
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_metric_points_run_pk_key_step"), ["run_pk", "key", "step"], unique=False)
    bind = op.get_bind()
    for run_pk, key, raw_steps, raw_stamps, raw_values in bind.execute(
        sa.text("SELECT run_pk, key, step_data, timestamp_data, value_data FROM metric_chunks ORDER BY id")
    ):
        unpacked = []
        for typecode, raw in (("q", raw_steps), ("q", raw_stamps), ("d", raw_values)):
            data = array(typecode)
            data.frombytes(raw)
            if sys.byteorder != "little":
                data.byteswap()
            unpacked.append(data.tolist())
        op.bulk_insert(
            points,
            [
                {"run_pk": run_pk, "key": key, "step": s, "timestamp_ms": t, "value": v}
                for s, t, v in zip(*unpacked, strict=True)
            ],
        )
    with op.batch_alter_table("metric_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_chunks_run_pk_key_first_step"))
    op.drop_table("metric_chunks")
