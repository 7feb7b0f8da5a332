"""Follows the registry's event stream and re-syncs models whose alias moved.

One long-lived WatchEvents stream per process, resumed after a disconnect from
the last event id it saw, with exponential backoff while the registry is
unreachable; models keep being served meanwhile. On every (re)connect, and
every `resync_seconds` while connected, each followed alias is resolved again,
so a move that happened while disconnected (or raced the first subscription)
is not missed; a configured model the registry did not have yet is loaded the
same way once it appears (its first VERSION_READY, or its alias being set). An
event only says "look again": the manager resolves the alias itself, so
replayed or reordered events cannot swap back to an older version.
"""

from __future__ import annotations

import asyncio
import logging

from maas.common import errors
from maas.common.loops import LoopService
from maas.inference.manager import ModelManager
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.inference.follower")

RELEVANT = frozenset({rpb.EVENT_TYPE_ALIAS_MOVED, rpb.EVENT_TYPE_ALIAS_DELETED, rpb.EVENT_TYPE_VERSION_READY})


class RegistryFollower(LoopService):
    name = "registry-follower"

    def __init__(self, manager: ModelManager, *, initial: float, maximum: float, resync: float) -> None:
        super().__init__(initial)
        self.manager = manager
        self.initial = initial
        self.maximum = maximum
        self.resync = resync
        self.last_id = 0
        self.connected = False
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()

    async def run_once(self) -> None:
        resync: asyncio.Task[None] | None = None
        try:
            events = self.manager.registry.watch_events(after_id=self.last_id, from_latest=self.last_id == 0)
            resync = asyncio.create_task(self._resync_forever())
            async for event in events:
                self._seen_registry()
                self.last_id = event.id
                self._handle(event)
            raise errors.Unavailable("the registry closed the event stream")
        except errors.MaasError as exc:
            self.connected = False
            self.interval = min(self.maximum, self.interval * 2) if self.interval >= self.initial else self.initial
            log.info("registry event stream lost (%s); reconnecting in %.1fs", exc.message, self.interval)
        finally:
            if resync is not None:
                resync.cancel()

    def _seen_registry(self) -> None:
        if not self.connected:
            self.connected = True
            self.interval = self.initial

    async def _resync_forever(self) -> None:
        while True:
            try:
                await self.manager.sync_all()
            except errors.MaasError as exc:
                log.info("resync failed: %s", exc.message)
            await asyncio.sleep(self.resync)

    def _handle(self, event: rpb.Event) -> None:
        if event.type not in RELEVANT:
            return
        if event.type == rpb.EVENT_TYPE_VERSION_READY:
            # A new version only matters to a model still waiting for its first one
            # (configured before it existed, or pinned to a version not uploaded yet).
            if self.manager.awaiting_first_version(event.model):
                self._sync_soon(event.model)
            return
        if self.manager.followed().get(event.model) == event.alias:
            self._sync_soon(event.model)

    def _sync_soon(self, model: str) -> None:
        """One sync task per model; events arriving meanwhile make it run once more."""
        self._dirty.add(model)
        task = self._pending.get(model)
        if task is None or task.done():
            self._pending[model] = asyncio.create_task(self._sync(model))

    async def _sync(self, model: str) -> None:
        while model in self._dirty:
            self._dirty.discard(model)
            try:
                await self.manager.sync(model)
            except errors.NotFound as exc:
                log.info("%s: nothing to serve yet: %s", model, exc.message)
            except errors.MaasError as exc:
                log.warning("%s: could not follow its alias: %s", model, exc.message)
            except Exception:
                log.exception("%s: sync failed", model)

    async def stop(self) -> None:
        await super().stop()
        for task in self._pending.values():
            task.cancel()
