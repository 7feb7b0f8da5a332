"""Follows the registry's event stream; the converger turns each event into what this replica serves.

One long-lived WatchEvents stream per process, resumed after a disconnect from
the last event id it saw, with exponential backoff while the registry is
unreachable; models keep being served meanwhile. On every (re)connect, and
every `resync_seconds` while connected, the converger reads every deployment
and model again and re-resolves every followed alias, so a change that
happened while disconnected (or raced the first subscription) is not missed.
An event only says "look again": the converger and the manager read the
registry themselves, so replayed or reordered events cannot swap back to an
older version or generation.
"""

from __future__ import annotations

import asyncio
import logging

from maas.common import errors
from maas.common.loops import LoopService
from maas.inference.convergence import Converger

log = logging.getLogger("maas.inference.follower")


class RegistryFollower(LoopService):
    name = "registry-follower"

    def __init__(self, converger: Converger, *, initial: float, maximum: float, resync: float) -> None:
        super().__init__(initial)
        self.converger = converger
        self.initial = initial
        self.maximum = maximum
        self.resync = resync
        self.last_id = 0
        self.connected = False

    async def run_once(self) -> None:
        resync: asyncio.Task[None] | None = None
        try:
            events = self.converger.registry.watch_events(after_id=self.last_id, from_latest=self.last_id == 0)
            resync = asyncio.create_task(self._resync_forever())
            async for event in events:
                self._seen_registry()
                self.last_id = event.id
                self.converger.on_event(event)
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
                await self.converger.resync()
            except errors.MaasError as exc:
                log.info("resync failed: %s", exc.message)
            await asyncio.sleep(self.resync)
