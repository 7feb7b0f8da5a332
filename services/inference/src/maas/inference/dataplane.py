"""The domain behind every RPC: one method per protocol call, in domain types.

The servicer converts a request, calls one of these, and converts the result;
all rules (lookup, validation, batching, statistics) live here and below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from maas.common import errors
from maas.inference import validation
from maas.inference.batcher import Outcome
from maas.inference.converters import IndexEntry, InferResult
from maas.inference.manager import ModelManager, ModelOptions, ServedVersion, State, Target
from maas.inference.statistics import Statistics, VersionStats
from maas.inference.validation import ParsedRequest

log = logging.getLogger("maas.inference.dataplane")

SERVER_NAME = "maas-inference"
SERVER_VERSION = "0.1.0"
# Only what is really implemented: no shared memory, no sequences, no trace or log settings.
EXTENSIONS = ("model_repository", "model_configuration", "statistics")


class DataPlane:
    def __init__(self, manager: ModelManager, statistics: Statistics) -> None:
        self.manager = manager
        self.statistics = statistics
        self.ready = False

    # ---------------------------------------------------- health, metadata

    def model_ready(self, name: str, version: str) -> bool:
        try:
            self.manager.lookup(name, version)
        except errors.MaasError:
            return False
        return self.ready

    def model(self, name: str, version: str) -> ServedVersion:
        return self.manager.lookup(name, version)

    # ------------------------------------------------------------ inference

    async def infer(self, request: Any, time_remaining: float | None) -> InferResult:
        served, parsed, future, start = self._submit(request, time_remaining)
        try:
            outcome = await future
        except BaseException as exc:
            _record_failure(served, start, exc)
            raise
        finally:
            served.release()
        return self._succeeded(served, parsed, outcome, start, request.id)

    def infer_soon(self, request: Any, done: Callable[[InferResult | BaseException], None]) -> asyncio.Future[Any]:
        """Start one request and call `done` with its result or error; no task per request.

        Returns the queued work (cancel it to drop the request), or a finished
        future when the request failed before it was queued (`done` was called).
        """
        try:
            served, parsed, future, start = self._submit(request, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through `done`
            done(exc)
            finished: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            finished.set_result(None)
            return finished

        def finish(f: asyncio.Future[Outcome]) -> None:
            served.release()
            if f.cancelled():
                _record_failure(served, start, asyncio.CancelledError())
                return
            exc = f.exception()
            if exc is not None:
                _record_failure(served, start, exc)
                done(exc)
            else:
                done(self._succeeded(served, parsed, f.result(), start, request.id))

        future.add_done_callback(finish)
        return future

    def _submit(
        self, request: Any, time_remaining: float | None
    ) -> tuple[ServedVersion, ParsedRequest, asyncio.Future[Outcome], int]:
        start = time.perf_counter_ns()
        served = self.manager.lookup(request.model_name, request.model_version)
        try:
            parsed = validation.parse(request, served.signature, served.limits)
            deadline = time.monotonic() + time_remaining if time_remaining is not None else None
            future = served.submit(parsed, deadline)
        except BaseException as exc:
            _record_failure(served, start, exc)
            raise
        return served, parsed, future, start

    def _succeeded(
        self, served: ServedVersion, parsed: ParsedRequest, outcome: Outcome, start: int, request_id: str
    ) -> InferResult:
        served.recorder.success(outcome, time.perf_counter_ns() - start, parsed.rows)
        specs = served.signature.outputs
        return InferResult(served, request_id, [(specs[i], outcome.outputs[i]) for i in parsed.outputs])

    # ----------------------------------------------------------- statistics

    def statistics_of(self, name: str, version: int | None) -> list[VersionStats]:
        if name and name not in self.manager.models and not self.statistics.select(name):
            raise errors.NotFound(f"model '{name[:64]}' is not loaded")
        if name and version is not None:
            served = self.manager.models.get(name)
            if served is not None and served.current is not None and served.current.version == version:
                self.statistics.for_version(name, version)  # an entry even before the first request
        if name and version is None:
            entry = self.manager.models.get(name)
            if entry is not None and entry.current is not None:
                self.statistics.for_version(name, entry.current.version)
        found = self.statistics.select(name, version)
        if name and version is not None and not found:
            raise errors.NotFound(f"model '{name[:64]}' version {version} has no statistics")
        return found

    # ----------------------------------------------------------- repository

    async def index(self, ready_only: bool) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for name, entry in sorted(self.manager.models.items()):
            if entry.current is not None:
                out.append(IndexEntry(name, entry.current.version_str, State.READY.value))
            if entry.loading:
                out.append(IndexEntry(name, str(entry.loading), State.LOADING.value))
            if entry.failure is not None and (entry.current is None or entry.failure.version != entry.current.version):
                out.append(IndexEntry(name, str(entry.failure.version), State.UNAVAILABLE.value, entry.failure.reason))
        for served in sorted(self.manager.retiring, key=lambda s: (s.model, s.version)):
            out.append(IndexEntry(served.model, served.version_str, State.UNLOADING.value))
        if not ready_only:
            known = {e.name for e in out}
            out.extend(IndexEntry(name, "", "") for name in await self._registry_models() if name not in known)
        return [e for e in out if e.state == State.READY.value] if ready_only else out

    async def _registry_models(self) -> list[str]:
        """The registry's models, best effort: the index still answers while it is down."""
        names: list[str] = []
        token = ""
        try:
            for _ in range(20):
                page = await self.manager.registry.list_models(page_size=500, page_token=token)
                names.extend(m.name for m in page.models)
                token = page.next_page_token
                if not token:
                    break
        except errors.MaasError as exc:
            log.info("repository index without the registry's models: %s", exc.message)
        return names

    async def load(self, name: str, target: Target | None, options: ModelOptions | None) -> None:
        await self.manager.load(name, target, options)

    async def unload(self, name: str) -> None:
        await self.manager.unload(name)


def _record_failure(served: ServedVersion, start: int, exc: BaseException) -> None:
    if isinstance(exc, errors.ResourceExhausted):
        reason = "REJECTED"
    elif isinstance(exc, errors.DeadlineExceeded | asyncio.CancelledError):
        reason = "CANCELED"
    elif isinstance(exc, errors.InvalidArgument):
        reason = "OTHER"
    else:
        reason = "BACKEND"
    served.recorder.failure(time.perf_counter_ns() - start, reason)
