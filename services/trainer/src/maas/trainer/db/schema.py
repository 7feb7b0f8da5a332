"""The trainer's own tables: jobs and their event logs."""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from maas.trainer import entities
from maas.trainer.jobspec import JobSpec

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobRow(Base):
    __tablename__ = "trainer_jobs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    spec_json: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(32), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    run_id: Mapped[str] = mapped_column(String(32), default="")
    registered_model: Mapped[str] = mapped_column(String(128), default="")
    registered_version: Mapped[int] = mapped_column(BigInteger, default=0)
    promoted_alias: Mapped[str] = mapped_column(String(64), default="")
    owner: Mapped[str] = mapped_column(String(128), default="")
    heartbeat_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Events up to this seq have had their metrics sent to the registry run.
    synced_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    started_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index(None, "state", "id"),)

    def to_entity(self) -> entities.Job:
        return entities.Job(
            job_id=self.job_id,
            spec=JobSpec.load(json.loads(self.spec_json)),
            state=entities.JobState(self.state),
            phase=self.phase,
            reason=self.reason,
            attempt=self.attempt,
            epoch=self.epoch,
            epochs=self.epochs,
            metrics=json.loads(self.metrics_json),
            run_id=self.run_id,
            registered_model=self.registered_model,
            registered_version=self.registered_version,
            promoted_alias=self.promoted_alias,
            idempotency_key=self.idempotency_key or "",
            created_at_ms=self.created_at_ms,
            started_at_ms=self.started_at_ms,
            finished_at_ms=self.finished_at_ms,
            last_seq=self.last_seq,
            owner=self.owner,
            cancel_requested=self.cancel_requested,
            synced_seq=self.synced_seq,
        )


class JobEventRow(Base):
    __tablename__ = "trainer_job_events"

    job_pk: Mapped[int] = mapped_column(ForeignKey("trainer_jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    data_json: Mapped[str] = mapped_column(Text)
    time_ms: Mapped[int] = mapped_column(BigInteger)
