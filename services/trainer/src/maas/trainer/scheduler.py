"""The job queue's driver: claims work, keeps heartbeats, adopts orphans.

One iteration: pass cancel requests (possibly made on another replica) to
local runners, claim the oldest QUEUED jobs while below the concurrency
limit, beat for running jobs, and adopt RUNNING jobs whose owner is this
replica after a restart or another replica that went silent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from maas.common.loops import LoopService
from maas.common.sql import now_ms
from maas.trainer import entities
from maas.trainer.db.schema import JobRow
from maas.trainer.db.store import JobStore

log = logging.getLogger("maas.trainer.scheduler")


class Scheduler(LoopService):
    name = "trainer-scheduler"

    def __init__(
        self,
        store: JobStore,
        *,
        owner: str,
        max_concurrent: int,
        interval: float,
        heartbeat_interval: float,
        stale_after: float,
        running: dict[str, Any],
        launch: Callable[[entities.Job], None],
        in_thread: Callable[..., Awaitable[Any]],
    ) -> None:
        super().__init__(interval)
        self._store = store
        self._owner = owner
        self._max = max_concurrent
        self._heartbeat_interval = heartbeat_interval
        self._stale_after = stale_after
        self._running = running
        self._launch = launch
        self._in_thread = in_thread
        self._last_beat = 0.0
        self._last_adopt = 0.0
        self.accepting = True

    async def run_once(self) -> None:
        if not self.accepting:
            return
        await self._pass_cancels()
        now = time.monotonic()
        if now - self._last_adopt >= self._stale_after / 2:
            self._last_adopt = now
            adopted = await self._in_thread(self._store.adopt, self._owner, now_ms() - int(self._stale_after * 1000))
            for job in adopted:
                if job.job_id not in self._running:
                    log.info("adopting running job %s (phase %s)", job.job_id, job.phase)
                    self._launch(job)
        free = self._max - len(self._running)
        if free > 0:
            for job in await self._in_thread(self._store.claim, self._owner, free):
                self._launch(job)
        if now - self._last_beat >= self._heartbeat_interval:
            self._last_beat = now
            await self._in_thread(self._store.heartbeat, self._owner, list(self._running))

    async def _pass_cancels(self) -> None:
        if not self._running:
            return
        ids = list(self._running)

        def tx(s: Any) -> list[str]:
            rows = s.execute(select(JobRow.job_id).where(JobRow.job_id.in_(ids), JobRow.cancel_requested.is_(True)))
            return [r[0] for r in rows]

        for job_id in await self._in_thread(self._store.db.read, tx):
            runner = self._running.get(job_id)
            if runner is not None:
                runner.cancel()
