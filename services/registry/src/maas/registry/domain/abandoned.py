"""PENDING versions whose upload was abandoned become FAILED ("upload abandoned").

A version is abandoned once `pending_seconds` have passed since it was
created and since its upload last received bytes. Each replica records the
activity of the uploads it is receiving (`LiveUploads`: when one starts, then
every sweep), so no replica fails a version another is still receiving; the
failing UPDATE re-checks its own condition, so replicas sweeping at once fail
a version once, with one VERSION_FAILED event. An upload idle in this process
past the setting is ended (FAILED_PRECONDITION) and its temp file removed;
partial files of crashed processes are the store sweeper's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection

from maas.common import errors
from maas.common.loops import LoopService
from maas.registry import entities
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms
from maas.registry.domain import events
from maas.registry.storage.sweeper import sweep_interval

log = logging.getLogger("maas.registry.abandoned")

REASON = "upload abandoned"
# Versions failed per transaction; a backlog is worked off sweep after sweep.
BATCH = 500
PENDING = entities.VersionStatus.PENDING.value


class LiveUpload:
    """One upload this process is receiving."""

    def __init__(self, model: str, number: int, task: asyncio.Task[object] | None) -> None:
        self.model = model
        self.number = number
        self.seen_ms = now_ms()
        self.receiving = True
        self.abandoned = False
        self._task = task

    async def fed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The chunks, each one recorded as activity."""
        async for chunk in chunks:
            self.seen_ms = now_ms()
            yield chunk
        self.receiving = False

    def activity_ms(self) -> int:
        # Once every byte is in, checking and storing them is activity too.
        return self.seen_ms if self.receiving else now_ms()

    def abandon(self) -> None:
        """End the call: it has received nothing for longer than the setting."""
        if self.receiving and not self.abandoned and self._task is not None:
            self.abandoned = True
            self._task.cancel()

    def forgive(self) -> None:
        """The cancellation was ours: the call goes on to answer with an error of its own."""
        if self._task is not None:
            self._task.uncancel()


def _touch(conn: Connection, uploads: list[LiveUpload]) -> None:
    v, m = st.versions.c, st.models.c
    for upload in uploads:
        seen_ms = upload.activity_ms()
        conn.execute(
            update(st.versions)
            .where(
                v.model_id == select(m.id).where(m.name == upload.model).scalar_subquery(),
                v.number == upload.number,
                v.status == PENDING,
                v.upload_seen_at_ms < seen_ms,
            )
            .values(upload_seen_at_ms=seen_ms)
        )


class LiveUploads:
    def __init__(self, db: Database, executor: Executor) -> None:
        self._db = db
        self._executor = executor
        self._live: set[LiveUpload] = set()

    def snapshot(self) -> list[LiveUpload]:
        return list(self._live)

    @contextlib.asynccontextmanager
    async def receiving(self, model: str, number: int) -> AsyncIterator[LiveUpload]:
        """Around an upload: its start is recorded before a byte is read, so no replica fails it meanwhile."""
        upload = LiveUpload(model, number, asyncio.current_task())
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._db.write_conn, lambda conn: _touch(conn, [upload])
        )
        self._live.add(upload)
        try:
            yield upload
        except asyncio.CancelledError:
            if not upload.abandoned:
                raise
            upload.forgive()
            raise errors.FailedPrecondition(f"version {model}/{number}: {REASON} (no bytes for too long)") from None
        finally:
            self._live.discard(upload)


class AbandonedVersions(LoopService):
    name = "registry-abandoned-versions"

    def __init__(
        self,
        db: Database,
        uploads: LiveUploads,
        executor: Executor,
        pending_seconds: float,
        on_event: Callable[[list[entities.Event]], None],
    ) -> None:
        super().__init__(sweep_interval(pending_seconds))
        self._db = db
        self._uploads = uploads
        self._executor = executor
        self._pending_ms = int(pending_seconds * 1000)
        self._on_event = on_event

    async def run_once(self) -> None:
        live = self._uploads.snapshot()
        cutoff = now_ms() - self._pending_ms
        try:
            failed = await asyncio.get_running_loop().run_in_executor(self._executor, self.sweep, live, cutoff)
        except errors.Unavailable:
            # The watchdog reports outages; the next sweep catches up.
            log.debug("abandoned-version sweep skipped: database unavailable", exc_info=True)
            return
        if failed:
            log.info("%d abandoned upload(s): %s FAILED", len(failed), ", ".join(f"{m}/{n}" for m, n in failed))
        for upload in live:
            if upload.activity_ms() < cutoff:
                upload.abandon()

    def sweep(self, live: list[LiveUpload], cutoff: int) -> list[tuple[str, int]]:
        """Record this process's upload activity, then fail what nobody has fed since `cutoff`."""
        v, m = st.versions.c, st.models.c
        stale = and_(v.status == PENDING, v.created_at_ms < cutoff, v.upload_seen_at_ms < cutoff)

        def tx(conn: Connection, event_log: events.Log) -> list[tuple[str, int]]:
            _touch(conn, live)
            candidates = conn.execute(
                select(v.id, m.name, v.number)
                .join(st.models, v.model_id == m.id)
                .where(stale)
                .order_by(v.id)
                .limit(BATCH)
            ).all()
            failed = []
            for version_id, model, number in candidates:
                # Conditional: a replica that got here first, or an upload that
                # finished meanwhile, leaves nothing to do.
                done = conn.execute(
                    update(st.versions).where(v.id == version_id, stale).values(status="FAILED", status_reason=REASON)
                )
                if done.rowcount:
                    failed.append((str(model), int(number)))
            for model, number in failed:
                event_log.append(entities.EventType.VERSION_FAILED, model, version=number)
            return failed

        return events.write(self._db, tx, self._on_event)
