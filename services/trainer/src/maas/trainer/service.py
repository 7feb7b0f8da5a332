"""The trainer's domain facade: submit, read, cancel and watch jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from maas.common import errors, paging, plugins
from maas.trainer import catalog_listing, entities, optimize_spec, spec
from maas.trainer.db.store import JobStore
from maas.trainer.runner import JobRunner

log = logging.getLogger("maas.trainer")
JOB_ID_CHARS = set("0123456789abcdef")


def check_job_id(job_id: str) -> str:
    if not (1 <= len(job_id) <= 32) or not set(job_id) <= JOB_ID_CHARS:
        raise errors.InvalidArgument(f"job_id: invalid job id '{job_id[:40]}'")
    return job_id


def check_key(idempotency_key: str) -> None:
    if idempotency_key and (len(idempotency_key) > 128 or "\x00" in idempotency_key):
        raise errors.InvalidArgument("idempotency_key: at most 128 characters")


class JobService:
    def __init__(
        self,
        store: JobStore,
        *,
        data_root: Path,
        max_world_size: int,
        max_runtime: int,
        in_thread: Callable[..., Awaitable[Any]],
        poll_interval: float,
    ) -> None:
        self._store = store
        self._data_root = data_root
        self._max_world = max_world_size
        self._max_runtime = max_runtime
        self._in_thread = in_thread
        self._poll = poll_interval
        self.runners: dict[str, JobRunner] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.on_submit: Callable[[], None] = lambda: None
        # Looks a source version up in the registry (set once the registry client exists).
        self.find_source: Callable[[str], Awaitable[optimize_spec.Source]] | None = None

    async def catalog(self, kind: str, name: str) -> list[plugins.Entry]:
        """The installed architectures and data sets a request asks for (ListCatalog)."""
        return await self._in_thread(catalog_listing.listing, kind, name)  # type: ignore[no-any-return]

    def notify(self, job_id: str) -> None:
        for waker in self._watchers.get(job_id, ()):
            waker.set()

    async def submit(self, raw: dict[str, Any], idempotency_key: str) -> entities.Job:
        check_key(idempotency_key)
        resolved = await self._in_thread(
            lambda: spec.resolve(
                raw, data_root=self._data_root, max_world_size=self._max_world, max_runtime=self._max_runtime
            )
        )
        job, created = await self._in_thread(self._store.submit, resolved, spec.fingerprint(resolved), idempotency_key)
        if created:
            log.info("job %s queued", job.job_id)
            self.on_submit()
        return job

    async def optimize(self, raw: dict[str, Any], idempotency_key: str) -> entities.Job:
        """Queue an optimization of a READY version; the source and its data set are checked first."""
        check_key(idempotency_key)
        checked = optimize_spec.check(raw)
        optimize_spec.require_tools(checked)
        digest = optimize_spec.fingerprint(checked)
        if idempotency_key:
            earlier = await self._in_thread(self._store.submitted, idempotency_key, digest)
            if earlier is not None:
                return earlier
        if self.find_source is None:
            raise errors.Unavailable("the trainer is starting")
        source = await self.find_source(checked.source)
        resolved = await self._in_thread(
            lambda: optimize_spec.resolve(checked, source, data_root=self._data_root, max_runtime=self._max_runtime)
        )
        job, created = await self._in_thread(self._store.submit, resolved, digest, idempotency_key)
        if created:
            log.info("job %s queued: optimize %s", job.job_id, checked.source)
            self.on_submit()
        return job

    async def get(self, job_id: str) -> entities.Job:
        return await self._in_thread(self._store.get, check_job_id(job_id))

    async def search(self, states: list[entities.JobState], size: int, token: str) -> entities.Page:
        limit = paging.page_size(size)
        scope = paging.fingerprint("jobs", sorted(states))
        after = paging.decode(token, scope)
        jobs, last = await self._in_thread(self._store.search, states, limit, int(after[0]) if after else None)
        return entities.Page(jobs, paging.encode([last], scope) if last is not None else "")

    async def cancel(self, job_id: str) -> entities.Job:
        job = await self._in_thread(self._store.request_cancel, check_job_id(job_id))
        runner = self.runners.get(job_id)
        if runner is not None:
            runner.cancel()
        self.notify(job_id)
        return job

    async def watch(self, job_id: str, after_seq: int) -> AsyncIterator[entities.JobEvent]:
        """Events after `after_seq`, then live ones; ends after the final state."""
        check_job_id(job_id)
        if after_seq < 0:
            raise errors.InvalidArgument("after_seq: must not be negative")
        waker = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(waker)
        sent = after_seq
        try:
            while True:
                waker.clear()
                events, state = await self._in_thread(self._store.events, job_id, sent)
                for event in events:
                    sent = event.seq
                    yield event
                if events:
                    continue
                if state.terminal:
                    return
                try:
                    # Local writers wake us at once; other replicas' within the poll interval.
                    await asyncio.wait_for(waker.wait(), timeout=self._poll)
                except TimeoutError:
                    pass
        finally:
            wakers = self._watchers.get(job_id, set())
            wakers.discard(waker)
            if not wakers:
                self._watchers.pop(job_id, None)
