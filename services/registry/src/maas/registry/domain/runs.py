"""Runs: params, batched metric ingestion and metric history."""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import LatestMetricRow, RunParamRow, RunRow
from maas.registry.domain import metric_store, paging

MAX_POINTS_PER_CALL = 1_000_000
HISTORY_DEFAULT_PAGE = 10_000
HISTORY_MAX_PAGE = 100_000
FINAL_STATUSES = (entities.RunStatus.FINISHED, entities.RunStatus.FAILED, entities.RunStatus.KILLED)


def get_row(session: Session, run_id: str) -> RunRow:
    row = session.scalars(select(RunRow).where(RunRow.run_id == run_id)).one_or_none()
    if row is None:
        raise errors.NotFound(f"run '{run_id}' not found")
    return row


def _validate_params(params: dict[str, str]) -> None:
    if len(params) > 1000:
        raise errors.InvalidArgument("params: at most 1000 per call")
    for key, value in params.items():
        names.metric_key(key, "params")
        names.text_value(value, f"params[{key}]", 6000)


def validate_series(series: list[entities.MetricSeries]) -> int:
    total = 0
    for s in series:
        names.metric_key(s.key, "series.key")
        n = len(s.values)
        if len(s.steps) != n or (s.timestamps_ms and len(s.timestamps_ms) != n):
            raise errors.InvalidArgument(f"series[{s.key}]: steps, values and timestamps_ms differ in length")
        if not all(map(math.isfinite, s.values)):
            raise errors.InvalidArgument(f"series[{s.key}]: values must be finite numbers")
        total += n
    if total > MAX_POINTS_PER_CALL:
        raise errors.ResourceExhausted(f"at most {MAX_POINTS_PER_CALL} points per call")
    return total


class RunService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str, job_id: str, params: dict[str, str]) -> entities.Run:
        names.text_value(name, "name", 256)
        if job_id:
            names.job_id(job_id)
        _validate_params(params)

        def tx(s: Session) -> entities.Run:
            row = RunRow(
                run_id=uuid.uuid4().hex,
                name=name,
                job_id=job_id,
                status=entities.RunStatus.RUNNING.value,
                started_at_ms=now_ms(),
                finished_at_ms=0,
            )
            row.params = [RunParamRow(key=k, value=v) for k, v in params.items()]
            row.latest = []
            s.add(row)
            s.flush()
            return row.to_entity()

        return self._db.write(tx)

    def get(self, run_id: str) -> entities.Run:
        names.run_id(run_id)
        return self._db.read(lambda s: get_row(s, run_id).to_entity())

    def search(self, job_id: str, size: int, token: str) -> entities.Page[entities.Run]:
        limit = paging.page_size(size)
        scope = paging.fingerprint("runs", job_id)
        after = paging.decode(token, scope)

        def tx(s: Session) -> entities.Page[entities.Run]:
            query = select(RunRow).order_by(RunRow.id.desc()).limit(limit + 1)
            if job_id:
                query = query.where(RunRow.job_id == job_id)
            if after:
                query = query.where(RunRow.id < int(after[0]))
            rows = list(s.scalars(query))
            more = len(rows) > limit
            rows = rows[:limit]
            return entities.Page([r.to_entity() for r in rows], paging.encode([rows[-1].id], scope) if more else "")

        return self._db.read(tx)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        names.run_id(run_id)
        _validate_params(params)

        def tx(s: Session) -> None:
            row = self._running(s, run_id)
            current = {p.key: p for p in row.params}
            for key, value in params.items():
                existing = current.get(key)
                if existing is None:
                    row.params.append(RunParamRow(key=key, value=value))
                elif existing.value != value:
                    raise errors.InvalidArgument(f"params[{key}]: already logged with another value")

        self._db.write(tx)

    def log_metrics(self, run_id: str, series: list[entities.MetricSeries]) -> int:
        names.run_id(run_id)
        total = validate_series(series)
        if total == 0:
            return 0
        ts = now_ms()
        batches: list[tuple[str, metric_store.Points]] = []
        latest: dict[str, tuple[int, int, float]] = {}
        for s_ in series:
            if not s_.values:
                continue
            stamps = s_.timestamps_ms or [ts] * len(s_.values)
            points = metric_store.Points.sorted_from(list(s_.steps), list(stamps), list(s_.values))
            batches.append((s_.key, points))
            # The newest point: the last by (step, timestamp), as sorted.
            best = (points.steps[-1], points.stamps[-1], points.values[-1])
            prior = latest.get(s_.key)
            if prior is None or (best[0], best[1]) >= (prior[0], prior[1]):
                latest[s_.key] = best

        def tx(s: Session) -> int:
            run_pk = self._running(s, run_id, load=False)
            conn = s.connection()
            for key, points in batches:
                metric_store.write(conn, run_pk, key, points)
            self._upsert_latest(s, run_pk, latest)
            return total

        return self._db.write(tx)

    def finish(self, run_id: str, status: entities.RunStatus) -> entities.Run:
        names.run_id(run_id)
        if status not in FINAL_STATUSES:
            raise errors.InvalidArgument("status: must be FINISHED, FAILED or KILLED")

        def tx(s: Session) -> entities.Run:
            row = get_row(s, run_id)
            if row.status != entities.RunStatus.RUNNING.value:
                if row.status == status.value:
                    return row.to_entity()
                raise errors.FailedPrecondition(f"run '{run_id}' already ended as {row.status}")
            row.status = status.value
            row.finished_at_ms = now_ms()
            s.flush()
            return row.to_entity()

        return self._db.write(tx)

    def history(
        self, run_id: str, key: str, min_step: int, max_step: int, size: int, token: str
    ) -> entities.Page[entities.MetricSeries]:
        names.run_id(run_id)
        names.metric_key(key, "key")
        if min_step and max_step and min_step > max_step:
            raise errors.InvalidArgument("min_step: greater than max_step")
        limit = paging.page_size(size, HISTORY_DEFAULT_PAGE, HISTORY_MAX_PAGE)
        scope = paging.fingerprint("history", run_id, key, min_step, max_step)
        after = paging.decode(token, scope)

        def tx(s: Session) -> entities.Page[entities.MetricSeries]:
            run_pk = s.scalar(select(RunRow.id).where(RunRow.run_id == run_id))
            if run_pk is None:
                raise errors.NotFound(f"run '{run_id}' not found")
            cursor = None
            if after:
                try:
                    cursor = metric_store.Cursor(*(int(v) for v in after))
                except (TypeError, ValueError) as exc:
                    raise errors.InvalidArgument("page_token: invalid") from exc
            page = metric_store.read(
                s.connection(),
                run_pk,
                key,
                min_step=min_step or None,
                max_step=max_step or None,
                after=cursor,
                limit=limit,
            )
            steps, stamps, values = page.points.steps, page.points.stamps, page.points.values
            next_token = ""
            if page.more:
                last = (steps[-1], stamps[-1])
                same = 0
                for st, tm in zip(reversed(steps), reversed(stamps), strict=True):
                    if (st, tm) != last:
                        break
                    same += 1
                if cursor is not None and same == len(steps) and (cursor.step, cursor.stamp) == last:
                    same += cursor.skip
                next_token = paging.encode([last[0], last[1], same], scope)
            return entities.Page([entities.MetricSeries(key, steps, values, stamps)], next_token)

        return self._db.read(tx)

    # --------------------------------------------------------------- helpers

    def _running(self, s: Session, run_id: str, *, load: bool = True) -> Any:
        result: Any
        if load:
            row = get_row(s, run_id)
            status, result = row.status, row
        else:
            found = s.execute(select(RunRow.id, RunRow.status).where(RunRow.run_id == run_id)).one_or_none()
            if found is None:
                raise errors.NotFound(f"run '{run_id}' not found")
            result, status = found
        if status != entities.RunStatus.RUNNING.value:
            raise errors.FailedPrecondition(f"run '{run_id}' has ended ({status})")
        return result

    def _upsert_latest(self, s: Session, run_pk: int, latest: dict[str, tuple[int, int, float]]) -> None:
        values = [
            {"run_pk": run_pk, "key": k, "step": step, "timestamp_ms": stamp, "value": value}
            for k, (step, stamp, value) in latest.items()
        ]
        dialect_insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(LatestMetricRow)
        excluded = stmt.excluded
        table = LatestMetricRow.__table__.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_pk", "key"],
            set_={"step": excluded.step, "timestamp_ms": excluded.timestamp_ms, "value": excluded.value},
            where=or_(
                excluded.step > table.step,
                and_(excluded.step == table.step, excluded.timestamp_ms >= table.timestamp_ms),
            ),
        )
        s.execute(stmt, values)


__all__ = ["RunService"]
