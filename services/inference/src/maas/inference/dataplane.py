"""The domain behind every RPC: one method per protocol call, in domain types.

The servicer converts a request, calls one of these, and converts the result;
all rules (lookup, validation, batching, statistics) live here and below.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version as distribution_version
from time import monotonic, perf_counter_ns

from maas.common import errors
from maas.inference import validation
from maas.inference.batcher import Outcome
from maas.inference.convergence import Converger
from maas.inference.domain import IndexEntry, InferRequest, InferResult, ModelOptions, State, Target
from maas.inference.manager import ModelEntry, ModelManager, NotLoaded
from maas.inference.served import ServedVersion
from maas.inference.shadow import Shadow, ShadowMetrics
from maas.inference.statistics import Statistics, VersionStats
from maas.inference.traffic import Split
from maas.inference.validation import ParsedRequest

log = logging.getLogger("maas.inference.dataplane")

SERVER_NAME = "maas-inference"  # also the distribution's name
# The installed distribution's version (ServerMetadata): one number to bump, in pyproject.toml.
SERVER_VERSION = distribution_version(SERVER_NAME)
# Only what is really implemented: no shared memory, no sequences, no trace or log settings.
EXTENSIONS = ("model_repository", "model_configuration", "statistics")


class DataPlane:
    def __init__(
        self,
        manager: ModelManager,
        statistics: Statistics,
        converger: Converger,
        shadow_metrics: ShadowMetrics | None = None,
    ) -> None:
        self.manager = manager
        self.statistics = statistics
        self.converger = converger
        self.split = Split(manager)
        """Which of a served name's targets answers a request (issue 14.3)."""
        settings = manager.settings
        self.shadow = Shadow(
            manager,
            record_failure,
            max_inflight=settings.shadow_max_inflight,
            timeout=settings.shadow_timeout,
            metrics=shadow_metrics,
        )
        """Copies of answered requests to their served name's shadow, off the caller's path."""
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
    #
    # One request is submit -> (await the future) -> release, then succeeded or
    # failed. `infer` does all of it for a unary call (gRPC's ModelInfer and the
    # HTTP infer route); a stream drives the steps itself, with a callback per request.
    # A model the memory limit evicted is loaded first (`submit_cold`): lookup
    # raises NotLoaded for it, so a loaded model's path stays synchronous.

    async def infer(self, request: InferRequest, time_remaining: float | None) -> InferResult:
        """One request from lookup to answer; raises (and counts) what fails."""
        try:
            served, parsed, future, start = self.submit(request, time_remaining)
        except NotLoaded:
            served, parsed, future, start = await self.submit_cold(request, time_remaining)
        try:
            outcome = await future
        except BaseException as exc:
            record_failure(served, start, exc)
            raise
        finally:
            served.release()
        return self.succeeded(served, parsed, outcome, start, request)

    def submit(
        self, request: InferRequest, time_remaining: float | None
    ) -> tuple[ServedVersion, ParsedRequest, asyncio.Future[Outcome], int]:
        """Look up, validate and queue one request; the caller calls `served.release()` once the future is done.

        Raises (and counts) what fails before the request is queued.
        """
        start = perf_counter_ns()
        served = self.split.route(request.model_name, request.model_version, request.id)
        return self._queue(served, request, time_remaining, start)

    async def submit_cold(
        self, request: InferRequest, time_remaining: float | None
    ) -> tuple[ServedVersion, ParsedRequest, asyncio.Future[Outcome], int]:
        """`submit` for a model that is not in memory: it waits for the model's load first, within its deadline."""
        start = perf_counter_ns()
        deadline = monotonic() + time_remaining if time_remaining is not None else None
        served = await self.manager.acquire(request.model_name, request.model_version, deadline)
        return self._queue(served, request, None if deadline is None else deadline - monotonic(), start)

    @staticmethod
    def _queue(
        served: ServedVersion, request: InferRequest, time_remaining: float | None, start: int
    ) -> tuple[ServedVersion, ParsedRequest, asyncio.Future[Outcome], int]:
        try:
            parsed = validation.parse(request, served.signature, served.limits)
            deadline = monotonic() + time_remaining if time_remaining is not None else None
            future = served.submit(parsed, deadline)
        except BaseException as exc:
            record_failure(served, start, exc)
            raise
        return served, parsed, future, start

    def succeeded(
        self, served: ServedVersion, parsed: ParsedRequest, outcome: Outcome, start: int, request: InferRequest
    ) -> InferResult:
        """Count and build the answer; its copy to the shadow, if any, starts here and is not waited for."""
        served.recorder.success(outcome, perf_counter_ns() - start, parsed.rows)
        outputs = outcome.outputs
        specs = served.signature.outputs
        if parsed.outputs is served.signature.all_outputs:  # every output, in order (the usual request)
            result = InferResult(served, request.id, list(zip(specs, outputs, strict=True)))
        else:
            result = InferResult(served, request.id, [(specs[i], outputs[i]) for i in parsed.outputs])
        self.shadow.mirror(request, result)
        return result

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
        for entry in self.manager.entries():  # every target of every served name, and layouts still loading
            name = entry.name
            if entry.current is not None:
                out.append(IndexEntry(name, entry.current.version_str, State.READY.value))
            if entry.loading:
                out.append(IndexEntry(name, str(entry.loading), State.LOADING.value))
            if entry.failure is not None and (entry.current is None or entry.failure.version != entry.current.version):
                out.append(IndexEntry(name, str(entry.failure.version), State.UNAVAILABLE.value, entry.failure.reason))
            elif entry.cold and not entry.loading:
                out.append(self._cold_entry(entry))
        for served in sorted(self.manager.retiring, key=lambda s: (s.model, s.version)):
            out.append(IndexEntry(served.model, served.version_str, State.UNLOADING.value))
        if not ready_only:
            known = {e.name for e in out}
            out.extend(IndexEntry(name, "", "") for name in await self._registry_models() if name not in known)
        return [e for e in out if e.state == State.READY.value] if ready_only else out

    def _cold_entry(self, entry: ModelEntry) -> IndexEntry:
        """A model kept out of memory by the memory limit: why, and what its last load took."""
        if not entry.evicted:
            return IndexEntry(
                entry.name,
                "",
                State.UNAVAILABLE.value,
                "not loaded (no room under the memory limit); a request loads it",
            )
        stats = self.statistics.for_version(entry.name, entry.evicted)
        reason = "evicted (least recently used, under the memory limit); a request loads it again"
        if stats.last_load_ns:
            reason += f" (its last load took {stats.last_load_ns / 1e6:.0f} ms)"
        return IndexEntry(entry.name, str(entry.evicted), State.UNAVAILABLE.value, reason)

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
        """RepositoryModelLoad: declared in the registry as a deployment, so every replica serves it."""
        await self.converger.load(name, target, options)

    async def unload(self, name: str) -> None:
        await self.converger.unload(name)


def record_failure(served: ServedVersion, start: int, exc: BaseException) -> None:
    """Count one failed request by Triton's failure reasons."""
    if isinstance(exc, errors.ResourceExhausted):
        reason = "REJECTED"
    elif isinstance(exc, errors.DeadlineExceeded | asyncio.CancelledError):
        reason = "CANCELED"
    elif isinstance(exc, errors.InvalidArgument):
        reason = "OTHER"
    else:
        reason = "BACKEND"
    served.recorder.failure(perf_counter_ns() - start, reason)
