"""Jobs and their event logs in SQL, one transaction per operation.

Claiming is FIFO and safe between trainer replicas: on PostgreSQL the oldest
QUEUED rows are locked with FOR UPDATE SKIP LOCKED, so two replicas never
take the same job; on SQLite write transactions are serialized anyway.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from maas.common import errors
from maas.common.sql import Database, now_ms
from maas.trainer import entities
from maas.trainer.db.schema import JobEventRow, JobRow
from maas.trainer.jobspec import JobSpec

EventSpec = tuple[str, dict[str, Any]]


def _get(s: Session, job_id: str, *, lock: bool = False) -> JobRow:
    query = select(JobRow).where(JobRow.job_id == job_id)
    if lock:
        query = query.with_for_update()
    row = s.scalars(query).one_or_none()
    if row is None:
        raise errors.NotFound(f"job '{job_id}' not found")
    return row


def _append(s: Session, row: JobRow, events: Sequence[EventSpec]) -> None:
    if not events:
        return
    first = row.last_seq + 1
    row.last_seq += len(events)
    ts = now_ms()
    s.execute(
        insert(JobEventRow),
        [
            {"job_pk": row.id, "seq": first + i, "kind": kind, "data_json": json.dumps(data), "time_ms": ts}
            for i, (kind, data) in enumerate(events)
        ],
    )


def state_event(row: JobRow) -> EventSpec:
    return ("state", {"state": row.state, "phase": row.phase, "reason": row.reason, "attempt": row.attempt})


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -------------------------------------------------------------- queries

    def get(self, job_id: str) -> entities.Job:
        return self.db.read(lambda s: _get(s, job_id).to_entity())

    def search(
        self, states: list[entities.JobState], limit: int, after_id: int | None
    ) -> tuple[list[entities.Job], int | None]:
        def tx(s: Session) -> tuple[list[entities.Job], int | None]:
            query = select(JobRow).order_by(JobRow.id.desc()).limit(limit + 1)
            if states:
                query = query.where(JobRow.state.in_([st.value for st in states]))
            if after_id is not None:
                query = query.where(JobRow.id < after_id)
            rows = list(s.scalars(query))
            more = len(rows) > limit
            rows = rows[:limit]
            return [r.to_entity() for r in rows], (rows[-1].id if more else None)

        return self.db.read(tx)

    def events(
        self, job_id: str, after_seq: int, limit: int = 500
    ) -> tuple[list[entities.JobEvent], entities.JobState]:
        def tx(s: Session) -> tuple[list[entities.JobEvent], entities.JobState]:
            row = _get(s, job_id)
            state = entities.JobState(row.state)
            rows = s.scalars(
                select(JobEventRow)
                .where(JobEventRow.job_pk == row.id, JobEventRow.seq > after_seq)
                .order_by(JobEventRow.seq)
                .limit(limit)
            )
            out = [entities.JobEvent(job_id, r.seq, r.time_ms, r.kind, json.loads(r.data_json)) for r in rows]
            return out, state

        return self.db.read(tx)

    # --------------------------------------------------------------- writes

    def submitted(self, idempotency_key: str, spec_hash: str) -> entities.Job | None:
        """The job an earlier submit with this key created (None if none), as `submit` would return it."""

        def tx(s: Session) -> entities.Job | None:
            existing = s.scalars(select(JobRow).where(JobRow.idempotency_key == idempotency_key)).one_or_none()
            if existing is None:
                return None
            if existing.spec_hash != spec_hash:
                raise errors.FailedPrecondition("idempotency_key: already used for a different spec")
            return existing.to_entity()

        return self.db.read(tx)

    def submit(self, spec: JobSpec, spec_hash: str, idempotency_key: str) -> tuple[entities.Job, bool]:
        """Returns (job, created). A known idempotency key returns its job."""

        def tx(s: Session) -> tuple[entities.Job, bool]:
            if idempotency_key:
                existing = s.scalars(select(JobRow).where(JobRow.idempotency_key == idempotency_key)).one_or_none()
                if existing is not None:
                    if existing.spec_hash != spec_hash:
                        raise errors.FailedPrecondition("idempotency_key: already used for a different spec")
                    return existing.to_entity(), False
            row = JobRow(
                job_id=uuid.uuid4().hex[:16],
                idempotency_key=idempotency_key or None,
                spec_json=json.dumps(spec.stored()),
                spec_hash=spec_hash,
                state=entities.JobState.QUEUED.value,
                phase=entities.Phase.QUEUED.value,
                reason="",
                attempt=0,
                epoch=0,
                epochs=spec.epochs,
                metrics_json="{}",
                created_at_ms=now_ms(),
                last_seq=0,
            )
            s.add(row)
            s.flush()
            _append(s, row, [state_event(row)])
            return row.to_entity(), True

        try:
            return self.db.write(tx)
        except errors.AlreadyExists:
            # Two submits with one key raced: the unique index let one in.
            return self.db.write(tx)

    def claim(self, owner: str, limit: int) -> list[entities.Job]:
        """Take up to `limit` of the oldest QUEUED jobs for `owner`."""

        def tx(s: Session) -> list[entities.Job]:
            query = (
                select(JobRow).where(JobRow.state == entities.JobState.QUEUED.value).order_by(JobRow.id).limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            claimed = []
            ts = now_ms()
            for row in s.scalars(query):
                row.state = entities.JobState.RUNNING.value
                row.phase = entities.Phase.STARTING.value
                row.owner = owner
                row.heartbeat_at_ms = ts
                row.started_at_ms = row.started_at_ms or ts
                _append(s, row, [state_event(row)])
                claimed.append(row.to_entity())
            return claimed

        return self.db.write(tx)

    def adopt(self, owner: str, stale_before_ms: int) -> list[entities.Job]:
        """RUNNING jobs this owner held before a restart, or whose owner went silent."""

        def tx(s: Session) -> list[entities.Job]:
            query = select(JobRow).where(JobRow.state == entities.JobState.RUNNING.value).order_by(JobRow.id)
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            adopted = []
            for row in s.scalars(query):
                if row.owner != owner and row.heartbeat_at_ms >= stale_before_ms:
                    continue
                row.owner = owner
                row.heartbeat_at_ms = now_ms()
                adopted.append(row.to_entity())
            return adopted

        return self.db.write(tx)

    def heartbeat(self, owner: str, job_ids: list[str]) -> None:
        if not job_ids:
            return

        def tx(s: Session) -> None:
            s.execute(
                update(JobRow).where(JobRow.job_id.in_(job_ids), JobRow.owner == owner).values(heartbeat_at_ms=now_ms())
            )

        self.db.write(tx)

    def record(
        self,
        job_id: str,
        events: Sequence[EventSpec] = (),
        *,
        state: entities.JobState | None = None,
        phase: str | None = None,
        reason: str | None = None,
        **fields: Any,
    ) -> entities.Job:
        """Append events and update the job in one transaction.

        A change of state or phase adds its own state event, after `events`.
        A job that has ended is never changed again.
        """

        def tx(s: Session) -> entities.Job:
            row = _get(s, job_id, lock=True)
            if entities.JobState(row.state).terminal:
                return row.to_entity()
            _append(s, row, events)
            for key, value in fields.items():
                if key == "metrics":
                    merged = json.loads(row.metrics_json)
                    merged.update(value)
                    row.metrics_json = json.dumps(merged)
                else:
                    setattr(row, key, value)
            changed = False
            if state is not None and state.value != row.state:
                row.state, changed = state.value, True
                if state.terminal:
                    row.finished_at_ms = now_ms()
            if phase is not None and phase != row.phase:
                row.phase, changed = phase, True
            if reason is not None and reason != row.reason:
                row.reason, changed = reason, True
            if changed:
                _append(s, row, [state_event(row)])
            return row.to_entity()

        return self.db.write(tx)

    def request_cancel(self, job_id: str) -> entities.Job:
        def tx(s: Session) -> entities.Job:
            row = _get(s, job_id, lock=True)
            state = entities.JobState(row.state)
            if state.terminal:
                return row.to_entity()
            if state == entities.JobState.QUEUED:
                row.state = entities.JobState.CANCELLED.value
                row.phase = entities.Phase.DONE.value
                row.reason = "cancelled before it started"
                row.finished_at_ms = now_ms()
                _append(s, row, [state_event(row)])
            else:
                row.cancel_requested = True
            return row.to_entity()

        return self.db.write(tx)

    def mark_synced(self, job_id: str, seq: int, run_id: str | None = None) -> None:
        def tx(s: Session) -> None:
            values: dict[str, Any] = {"synced_seq": seq}
            if run_id is not None:
                values["run_id"] = run_id
            s.execute(update(JobRow).where(JobRow.job_id == job_id).values(**values))

        self.db.write(tx)
