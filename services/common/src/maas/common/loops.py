"""Small bases for background work: a loop (run_once every interval, stop cleanly), and per-key catch-up tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("maas.loops")


class LoopService:
    """Calls `run_once` every `interval` seconds until `stop`.

    A failing iteration is logged and the loop goes on; `wake` runs the next
    iteration at once (e.g. when this process itself wrote something new).
    """

    name = "loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def run_once(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: iteration failed", self.name)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass


K = TypeVar("K", bound=Hashable)


class Coalescer(Generic[K]):
    """One task per key running `work(key)`; a key marked again while its task runs makes it run once more.

    For work that only has to catch up with the latest state (re-read a record,
    send a report): a burst of marks costs at most two runs, and different keys
    run side by side. A failing run is logged; the key runs again when marked.
    """

    def __init__(self, work: Callable[[K], Awaitable[None]], name: str) -> None:
        self._work = work
        self._name = name
        self._dirty: set[K] = set()
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._stopped = False

    def mark(self, key: K) -> None:
        if self._stopped:
            return  # stopping: what is marked now is not run
        self._dirty.add(key)
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"{self._name}:{key}")

    async def _run(self, key: K) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: %s failed", self._name, key)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def idle(self) -> None:
        """Wait until no key has work left (what was marked before the call and since)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self) -> None:
        self._stopped = True
        self._dirty.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
