"""One loaded version: its runtime, batcher and statistics, and the requests it has in flight.

Kept apart from the manager (which decides what is served) so that the
converters and the data plane can name it without importing the manager.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic

from maas.inference import runtimes
from maas.inference.batcher import Batcher, BatchPolicy, Outcome, Runner
from maas.inference.domain import ModelOptions, State
from maas.inference.statistics import Recorder
from maas.inference.tensors import Signature
from maas.inference.validation import Limits, ParsedRequest

log = logging.getLogger("maas.inference.served")


class ServedVersion:
    """One loaded version: runtime, batcher, statistics, and its in-flight count."""

    def __init__(
        self,
        model: str,
        version: int,
        runtime: runtimes.Runtime,
        signature: Signature,
        policy: BatchPolicy,
        limits: Limits,
        recorder: Recorder,
        options: ModelOptions,
        prepare: Runner | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.source = model
        """The registry model it is a version of (a deployment may serve it under another name)."""
        self.version_str = str(version)
        self.runtime = runtime
        self.signature = signature
        self.policy = policy
        self.limits = limits
        self.recorder = recorder
        self.options = options
        self.batcher = Batcher(
            runtime.run, policy, name=f"{model}-{version}", on_execution=recorder.execution, prepare=prepare
        )
        self.state = State.READY
        self.inflight = 0
        self.last_used = monotonic()
        """When a request was last queued (the memory limit evicts the least recently used version)."""
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, parsed: ParsedRequest, deadline: float | None) -> asyncio.Future[Outcome]:
        """Queue one request; the caller calls `release` once the future is done."""
        future = self.batcher.submit(parsed.arrays, parsed.rows, deadline)
        self.inflight += 1
        self.last_used = monotonic()
        self._idle.clear()
        return future

    def release(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> None:
        self.state = State.UNLOADING
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning(
                "%s/%s: %d requests still running after %.0fs of drain",
                self.model,
                self.version,
                self.inflight,
                timeout,
            )
        await self.batcher.close()
        self.runtime.close()
