"""The background sweep of abandoned partial uploads, paced by the staleness setting.

A .part file is removed at most `stale_seconds + sweep_interval(stale_seconds)`
after its last write, so the setting means what it says whether it is two
seconds or a day; the first sweep runs at start, for what a crash left behind.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from maas.common.loops import LoopService
from maas.registry.storage.store import LocalArtifactStore

# A quarter of the setting overshoots it by at most 25 %; the floor keeps a
# tiny setting from spinning on the directory, the ceiling keeps a long one
# from leaving gigabytes of partials for hours past their time.
MIN_INTERVAL_S = 0.25
MAX_INTERVAL_S = 600.0


def sweep_interval(stale_seconds: float) -> float:
    return min(max(stale_seconds / 4, MIN_INTERVAL_S), MAX_INTERVAL_S)


class UploadSweeper(LoopService):
    name = "registry-upload-sweeper"

    def __init__(self, store: LocalArtifactStore, executor: Executor, stale_seconds: float) -> None:
        super().__init__(sweep_interval(stale_seconds))
        self._store = store
        self._executor = executor
        self._stale_seconds = stale_seconds

    async def run_once(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._store.sweep, self._stale_seconds)
