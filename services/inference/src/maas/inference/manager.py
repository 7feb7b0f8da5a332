"""The model manager: which versions this process serves, and how they change.

A served name (what requests name) has one or more targets, each an entry: a
registry model (the served name itself unless a deployment says otherwise) at
an alias to follow or a pinned version. Requests go to the served name's entry
in `models`; a deployment's other targets (`companions`: lighter ones, weight
0, the shadow) are loaded, warmed, followed and reported the same way, and are
reached by their version for now (issue 14.3 spreads traffic over them by
weight). `apply` moves a served name from one set of targets to another: the
new ones load and warm while the old ones serve, then one assignment swaps
them, and the targets that left drain.

Each entry has a target - an alias to follow or a pinned version. To
reach it the manager resolves it through the registry, fetches the verified
artifact, builds the runtime off the event loop, warms it up, probes whether
batching can stack it, and only then swaps it in: one assignment, so every
request sees either the old version or the new one. The old version is then
drained (its in-flight requests finish) and closed. A version that cannot be
built is recorded as failed with its reason, and whatever was serving goes on
serving.

A target is kept even while the registry does not have it (or its alias, or
its pinned version) yet: the follower syncs it when an event says it may have
appeared, and on every resync. What is declared (deployments, the
configuration, the default policy) is the converger's; this module only
serves it.

Under a memory limit (`residency`) a served name's entry may be cold: evicted
to make room, or declared when there was none. Its next request loads it
(`acquire`: concurrent requests wait on one load, within their deadlines),
resolving its target again - or, while the registry is unreachable, loading
the version it last served from the artifact cache. Convergence and the
follower never evict (a target that does not fit stays cold until asked for);
requests and RepositoryModelLoad do, least recently used first. A
deployment's other targets (its canary, its shadow) count against the limit
but are not evicted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import monotonic, perf_counter_ns
from typing import Any

from google.protobuf import json_format

from maas.common import errors, names, text_task
from maas.common.clients.registry import RegistryClient
from maas.inference import runtimes, text_runtime
from maas.inference.batcher import BatchPolicy
from maas.inference.cache import ArtifactCache, choose_artifact, text_artifacts
from maas.inference.converters import signature_from_registry
from maas.inference.domain import ModelOptions, ServedTarget, State, Target
from maas.inference.metrics import InferenceMetrics
from maas.inference.residency import Reservation, Residency
from maas.inference.served import ServedVersion
from maas.inference.settings import InferenceSettings
from maas.inference.statistics import Recorder, Statistics
from maas.inference.tensors import Signature
from maas.inference.validation import Limits
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.inference.manager")


@dataclass
class Failure:
    version: int
    reason: str
    permanent: bool


@dataclass
class ModelEntry:
    name: str
    target: Target
    options: ModelOptions = field(default_factory=ModelOptions)
    current: ServedVersion | None = None
    loading: int = 0
    failure: Failure | None = None
    waiting: str | None = None  # why the registry has nothing to serve yet (NotFound on resolve)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cold: bool = False
    """Kept, but not in memory under the memory limit: its next request loads it."""
    evicted: int = 0
    """The version last evicted (0: none), for the repository index."""
    resolved: rpb.ModelVersion | None = None
    """What its target last resolved to: a cold load falls back on it while the registry is down."""
    waiters: int = 0
    """Requests waiting for a cold load; while any wait, what it loaded is not evicted."""
    warming: asyncio.Task[None] | None = None
    model: str = ""
    """The registry model its target names ("": the served name itself)."""
    weight: int = 100
    """Its percent of the served name's requests (a deployment target's weight)."""
    shadow: bool = False
    """A deployment's shadow: it gets copies of requests, never a caller's answer."""

    @property
    def source(self) -> str:
        return self.model or self.name

    def ref(self) -> str:
        return self.target.ref(self.source)


class NotLoaded(errors.Unavailable):
    """The model is kept but cold: `ModelManager.acquire` loads it."""


@dataclass(frozen=True)
class _Plan:
    artifact: rpb.Artifact
    tokenizer: rpb.Artifact | None
    max_length: int | None
    architecture: dict[str, Any]


def parse_model_ref(ref: str, default_alias: str) -> tuple[str, Target]:
    """'name@alias', 'name/3' or 'name' (which follows `default_alias`)."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        return names.model_name(name), Target(alias=names.alias_name(alias, allow_reserved=True))
    if "/" in ref:
        name, _, number = ref.partition("/")
        if not number.isdigit() or len(number) > 18:
            raise errors.InvalidArgument(f"invalid version in model reference '{ref[:80]}'")
        return names.model_name(name), Target(version=names.version_number(int(number)))
    return names.model_name(ref), Target(alias=default_alias)


class ModelManager:
    def __init__(
        self,
        settings: InferenceSettings,
        registry: RegistryClient,
        statistics: Statistics,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.statistics = statistics
        self.metrics = metrics
        self.cache = ArtifactCache(settings.cache_dir)
        self.models: dict[str, ModelEntry] = {}
        """Each served name's entry that takes its requests."""
        self.companions: dict[str, tuple[ModelEntry, ...]] = {}
        """Each served name's other targets, in the order declared."""
        self.upcoming: dict[str, tuple[ModelEntry, ...]] = {}
        """A served name's next targets while they load, or while none of them can serve (the old ones do)."""
        self.on_change: Callable[[str], None] | None = None
        """Told the served name whenever what it serves changes (a load starts, ends or fails, a drain ends)."""
        self._layouts: dict[str, asyncio.Lock] = {}
        self.retiring: set[ServedVersion] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._options = runtimes.RuntimeOptions(settings.device, settings.intra_op_threads)
        self.residency: Residency[ServedVersion] = Residency(int(settings.memory_limit), self._evictable, self._evict)
        statistics.memory_limit = int(settings.memory_limit)

    # ---------------------------------------------------------------- lookup

    def lookup(self, name: str, version: str) -> ServedVersion:
        if version:
            for other in self.companions.get(name, ()):
                if not other.shadow and other.current is not None and other.current.version_str == version:
                    return other.current
        entry = self.models.get(name)
        if entry is None:
            raise errors.NotFound(f"model '{_clip(name)}' is not loaded")
        served = entry.current
        if served is None:
            if entry.cold:
                raise NotLoaded(
                    f"model '{name}' is not in memory (evicted under the memory limit); an inference request loads it"
                )
            if entry.failure:
                reason = f": {entry.failure.reason}"
            elif entry.waiting:
                reason = f": waiting for it in the registry ({entry.waiting})"
            else:
                reason = " (loading)"
            raise errors.Unavailable(f"model '{name}' is not ready{reason}")
        if version and version != served.version_str:
            raise errors.NotFound(f"model '{name}' version '{_clip(version)}' is not loaded (serving {served.version})")
        return served

    async def acquire(self, name: str, version: str, deadline: float | None) -> ServedVersion:
        """What `lookup` answers, loading a cold model first (the request waits, within `deadline`)."""
        entry = self.models.get(name)
        if entry is None or not entry.cold:
            return self.lookup(name, version)
        if entry.waiters >= self.settings.max_queue_size:
            raise errors.ResourceExhausted(
                f"model '{name}' is loading and already has {entry.waiters} requests waiting"
            )
        task = entry.warming
        if task is None or task.done():
            task = entry.warming = asyncio.ensure_future(self._warm(entry))
            task.add_done_callback(_retrieved)
        entry.waiters += 1
        try:
            timeout = None if deadline is None else deadline - monotonic()
            if timeout is not None and timeout <= 0:
                raise errors.DeadlineExceeded(f"model '{name}' was not loaded before the request's deadline")
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                raise errors.DeadlineExceeded(f"model '{name}' was still loading at the request's deadline") from None
        finally:
            entry.waiters -= 1
            if entry.waiters == 0:
                self.residency.changed()  # what it loaded may be evicted from now on
        return self.lookup(name, version)

    def targets(self, name: str) -> list[ModelEntry]:
        """What `name` serves: the entry its requests go to, then its other targets (issue 14.3 splits over them)."""
        entry = self.models.get(name)
        return ([entry] if entry is not None else []) + list(self.companions.get(name, ()))

    def entries(self) -> list[ModelEntry]:
        """Every entry, once: serving, companions, and those of layouts still loading."""
        found: dict[int, ModelEntry] = {}
        for name in sorted(self.models.keys() | self.companions.keys() | self.upcoming.keys()):
            for entry in [*self.targets(name), *self.upcoming.get(name, ())]:
                found.setdefault(id(entry), entry)
        return list(found.values())

    def pending(self) -> dict[tuple[str, int], int]:
        out = {}
        for served in [*(e.current for e in self.entries()), *self.retiring]:
            if served is not None:
                out[(served.model, served.version)] = served.inflight
        return out

    def states(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for e in self.entries():
            if e.current is not None:
                counts[State.READY.value] += 1
            if e.loading:
                counts[State.LOADING.value] += 1
            if e.failure is not None:
                counts[State.UNAVAILABLE.value] += 1
        counts[State.UNLOADING.value] += len(self.retiring)
        return counts

    def memory(self) -> Iterator[tuple[ServedVersion, int]]:
        """Each built version not yet closed and the bytes it counts against the memory limit."""
        return iter(list(self.residency.held.items()))

    # ---------------------------------------------------------- served names

    async def apply(
        self,
        name: str,
        targets: Sequence[ServedTarget],
        options: ModelOptions | None = None,
        *,
        retry_failed: bool = False,
        evict: bool = False,
    ) -> list[errors.MaasError]:
        """Serve exactly `targets` under `name` (none: stop serving it); why each target that failed could not load.

        A target already loaded with these options stays as it is. New ones load
        and warm while the old ones serve; then the new layout is swapped in, in
        one step, and the targets that left it drain. A new layout none of whose
        targets can take requests is not swapped in while an old one serves: the
        old one goes on, and `upcoming` keeps the new one (the follower retries
        it, the reports and the index show why it failed). `retry_failed`
        rebuilds a version that failed before; `evict` may make room under the
        memory limit (a load a client asked for).
        """
        names.model_name(name)
        opts = options or ModelOptions()
        lock = self._layouts.setdefault(name, asyncio.Lock())
        async with lock:
            old = self.targets(name)
            pool = old + [e for e in self.upcoming.pop(name, ()) if not _holds(old, e)]
            if not targets:
                self.models.pop(name, None)
                self.companions.pop(name, None)
                for entry in pool:
                    self._drop(entry)
                self._layouts.pop(name, None)
                self._changed(name)
                return []
            chosen: list[tuple[ServedTarget, ModelEntry]] = []
            for target in targets:
                match = next(
                    (e for e in pool if e.source == target.model and e.target == target.target and e.options == opts),
                    None,
                )
                if match is None:
                    match = ModelEntry(name, target.target, opts, model=target.model if target.model != name else "")
                else:
                    pool.remove(match)
                chosen.append((target, match))
            layout = tuple(entry for _, entry in chosen)
            self.upcoming[name] = layout
            self._changed(name)
            # What is not loaded yet; with `retry_failed` (a client's load), every target resolves again.
            work = [e for e in layout if retry_failed or e.current is None or not _holds(old, e)]
            results = await asyncio.gather(
                *(self._reconcile(e, retry_failed=retry_failed, evict=evict) for e in work), return_exceptions=True
            )
            failures: list[errors.MaasError] = []
            ready = [e for e in layout if e.current is not None]
            for entry, result in zip(work, results, strict=True):
                if isinstance(result, errors.MaasError):
                    failures.append(result)
                elif isinstance(result, BaseException):
                    log.error("%s: load failed", entry.ref(), exc_info=result)
                    failures.append(errors.Internal(f"{entry.ref()} could not be loaded"))
                elif entry.cold and not _holds(ready, entry):
                    ready.append(entry)  # kept cold under the memory limit: a request loads it
            for target, entry in chosen:
                entry.weight, entry.shadow = target.weight, target.shadow
            traffic = [e for t, e in chosen if not t.shadow]
            serving = [e for e in traffic if _holds(ready, e)]
            if self.upcoming.get(name) is layout and (
                serving or not any(e.current is not None for e in old if not e.shadow)
            ):
                primary = max(serving or traffic, key=lambda e: e.weight)  # the first of the heaviest
                self.models[name] = primary
                others = tuple(e for e in layout if e is not primary)
                if others:
                    self.companions[name] = others
                else:
                    self.companions.pop(name, None)
                del self.upcoming[name]
                for entry in pool:  # what left the layout
                    self._drop(entry)
            self._changed(name)
            return failures

    async def unload(self, name: str) -> None:
        if name not in self.models and name not in self.upcoming:
            raise errors.NotFound(f"model '{_clip(name)}' is not loaded")
        await self.apply(name, ())

    async def follow(self, model: str, alias: str | None = None) -> set[str]:
        """Bring every target of `model` at `alias` to what the alias names now; the served names touched.

        `alias` None: a new version of the model appeared (VERSION_READY), which
        matters to targets waiting for their first version and to `@latest` ones.
        """
        touched: set[str] = set()
        for entry in self.entries():
            if entry.source != model:
                continue
            if alias is None and not (entry.current is None or entry.target.alias == names.LATEST):
                continue
            if alias is not None and entry.target.alias != alias:
                continue
            touched.add(entry.name)
            await self._sync(entry)
        return touched

    async def sync_all(self) -> None:
        for entry in self.entries():
            await self._sync(entry)

    async def _sync(self, entry: ModelEntry) -> None:
        """Bring an entry to its target again (after an alias moved, or a failed load); logs why it could not."""
        if entry.cold or (entry.current is not None and not entry.target.alias):
            return  # a cold model resolves its target again when a request loads it
        try:
            # A served model takes room for its new version; one not served yet only where there is room.
            await self._reconcile(entry, retry_failed=False, evict=entry.current is not None)
        except errors.NotFound as exc:
            log.info("%s: nothing to serve yet: %s", entry.ref(), exc.message)
        except errors.MaasError as exc:
            log.warning("%s: could not follow it: %s", entry.ref(), exc.message)

    async def close(self) -> None:
        for name in sorted(self.models.keys() | self.companions.keys() | self.upcoming.keys()):
            await self.apply(name, ())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _drop(self, entry: ModelEntry) -> None:
        """An entry that is no longer a target: what it serves drains (requests already queued finish)."""
        entry.cold = False
        if entry.current is not None:
            served, entry.current = entry.current, None
            self._spawn(self._retire(served))

    def _kept(self, entry: ModelEntry) -> bool:
        return _holds(self.targets(entry.name), entry) or _holds(self.upcoming.get(entry.name, ()), entry)

    def _changed(self, name: str) -> None:
        if self.on_change is not None:
            self.on_change(name)

    # -------------------------------------------------------------- internals

    async def _reconcile(
        self, entry: ModelEntry, *, retry_failed: bool, evict: bool = True, cold: bool = False
    ) -> ServedVersion | None:
        """Bring `entry` to its target; None when it stays cold (no room, and `evict` is off).

        `cold`: a request waits for this load (it is timed as a cold start, and
        may fall back on the version last resolved while the registry is down).
        """
        async with entry.lock:
            started = perf_counter_ns()
            try:
                version = await self.registry.resolve(entry.ref())
            except errors.NotFound as exc:
                entry.waiting = exc.message
                raise
            except errors.Unavailable as exc:
                if not (cold and entry.resolved is not None):
                    raise
                version = entry.resolved
                log.info(
                    "%s: registry unreachable (%s); loading version %s again", entry.name, exc.message, version.version
                )
            entry.waiting = None
            entry.resolved = version
            current = entry.current
            if current is not None and current.version == version.version and current.options == entry.options:
                return current
            failed = entry.failure
            if not retry_failed and failed and failed.permanent and failed.version == version.version:
                entry.cold = False  # nothing to load on a request: it answers with the failure
                return current
            entry.loading = version.version
            self._changed(entry.name)
            try:
                plan = self._plan(entry, version)
                files = await self._fetch(version, plan)
                ref = f"{entry.source}/{version.version}"
                reservation = await self.residency.reserve(ref, sum(f.stat().st_size for f in files), evict=evict)
                if reservation is None:
                    entry.cold = current is None
                    log.info("%s: kept unloaded (no room under the memory limit); its first request loads it", ref)
                    return current
                served = await self._admitted(reservation, self._build(entry, version, plan, files))
            except errors.MaasError as exc:
                permanent = not isinstance(exc, errors.Unavailable)
                entry.failure = Failure(version.version, exc.message, permanent)
                entry.cold = entry.cold and not permanent and entry.current is None
                log.warning("%s/%s failed to load: %s", entry.source, version.version, exc.message)
                raise
            finally:
                entry.loading = 0
                self._changed(entry.name)
            if not self._kept(entry):  # unloaded (or no longer a target) meanwhile
                self._spawn(self._retire(served))
                raise errors.Aborted(f"model '{entry.name}' was unloaded while it loaded")
            entry.failure = None
            entry.cold = False
            current = entry.current  # again: it may have been evicted while this one loaded
            entry.current = served  # the swap: new requests see the new version from here on
            self._loaded(served, perf_counter_ns() - started, cold)
            log.info(
                "%s: serving %s%s",
                entry.name,
                f"{entry.source}/{served.version}",
                f" (was {current.version})" if current else "",
            )
            if current is not None:
                self._spawn(self._retire(current))
            return served

    async def _warm(self, entry: ModelEntry) -> None:
        """The load one or more requests for a cold model wait on."""
        await self._reconcile(entry, retry_failed=False, cold=True)

    def _plan(self, entry: ModelEntry, version: rpb.ModelVersion) -> _Plan:
        """Which artifacts to build `version` from (FailedPrecondition when it cannot be served)."""
        ref = f"{entry.source}/{version.version}"
        if version.status != rpb.VERSION_STATUS_READY:
            raise errors.FailedPrecondition(f"{ref} is not READY in the registry")
        arch = json_format.MessageToDict(version.architecture)
        try:
            max_length = text_task.max_length_of(arch)
        except errors.InvalidArgument as exc:
            raise errors.FailedPrecondition(f"{ref} cannot be served: {exc.message}") from None
        if max_length is not None:
            artifact, tokenizer = text_artifacts(version)
            return _Plan(artifact, tokenizer, max_length, arch)
        return _Plan(choose_artifact(version, entry.options.format or self.settings.preferred_format), None, None, arch)

    async def _fetch(self, version: rpb.ModelVersion, plan: _Plan) -> list[Path]:
        """The verified local files of the plan: [graph or weights] or [graph, tokenizer]."""
        files = [await self.cache.fetch(self.registry, version, plan.artifact)]
        if plan.tokenizer is not None:
            files.append(await self.cache.fetch(self.registry, version, plan.tokenizer))
        return files

    async def _admitted(self, reservation: Reservation, build: Coroutine[Any, Any, ServedVersion]) -> ServedVersion:
        """Run `build` on `reservation`'s bytes: held by the version it built, freed if it failed."""
        try:
            served = await build
        except BaseException:
            self.residency.cancel(reservation)
            raise
        self.residency.admit(reservation, served)
        served.recorder.stats.memory_bytes = reservation.nbytes
        return served

    async def _build(
        self, entry: ModelEntry, version: rpb.ModelVersion, plan: _Plan, files: list[Path]
    ) -> ServedVersion:
        ref = f"{entry.source}/{version.version}"
        arch, artifact, max_length = plan.architecture, plan.artifact, plan.max_length
        path = files[0]
        tokenizer = files[-1]
        settings = self.settings
        opts = entry.options
        max_rows = opts.max_batch_size or settings.max_batch_size
        preferred = (
            opts.preferred_batch_sizes
            if opts.preferred_batch_sizes is not None
            else tuple(settings.preferred_batch_sizes)
        )
        declared = signature_from_registry(version.signature)
        where = self._options if opts.device is None else replace(self._options, device=opts.device)

        def build() -> tuple[runtimes.Runtime, Signature, int | None]:
            try:
                runtime: runtimes.Runtime
                if max_length is not None:
                    text, signature = text_runtime.load(path, tokenizer, max_length, declared, where)
                    text_runtime.warm_up(text, signature, max_length)
                    return text, signature, 1  # stacked as it comes: see text_runtime
                if artifact.format == rpb.MODEL_FORMAT_SAFETENSORS:
                    runtime, signature = runtimes.load_torch(arch, path, where)
                else:
                    runtime, signature = runtimes.load_onnx(path, declared, where)
                try:
                    signature.check_servable()
                except ValueError as exc:
                    raise errors.FailedPrecondition(str(exc)) from None
                rows = max_rows if signature.batched else 1
                runtimes.warm_up(runtime, signature, rows)
                return runtime, signature, runtimes.probe_min_rows(runtime, signature, rows)
            except errors.MaasError as exc:
                raise errors.FailedPrecondition(f"{ref} cannot be served: {exc.message}") from None
            except Exception as exc:
                log.exception("%s: build failed", ref)
                raise errors.FailedPrecondition(f"{ref} cannot be served: {runtimes._short(exc)}") from None

        runtime, signature, min_rows = await asyncio.to_thread(build)
        batched = signature.batched
        policy = BatchPolicy(
            max_batch_size=max_rows if (batched and settings.dynamic_batching) else 1,
            max_queue_delay_us=opts.max_queue_delay_us
            if opts.max_queue_delay_us is not None
            else settings.max_queue_delay_us,
            preferred_batch_sizes=tuple(p for p in preferred if p <= max_rows),
            max_queue_size=opts.max_queue_size or settings.max_queue_size,
            instances=opts.instances or settings.instances,
            stack=min_rows is not None,
            min_rows=min_rows or 1,
        )
        limits = Limits(
            max_batch_size=max_rows if batched else 0,
            max_elements=settings.max_request_elements,
            max_strings=settings.max_text_strings,
            max_string_bytes=settings.max_text_bytes,
        )
        stats = self.statistics.for_version(entry.name, version.version)
        observer = self.metrics.for_version(entry.name, version.version) if self.metrics else None
        log.info(
            "%s: built on %s (%s); batching %s",
            ref,
            runtime.device,
            runtime.platform,
            "tokenizes and stacks requests (each batch padded to its longest text)"
            if isinstance(runtime, text_runtime.TextRuntime)
            else f"stacks requests, executions padded to {min_rows}+ rows"
            if min_rows is not None
            else "computes each request on its own rows (not batch-invariant)",
        )
        prepare = runtime.prepare if isinstance(runtime, text_runtime.TextRuntime) else None
        served = ServedVersion(
            entry.name, version.version, runtime, signature, policy, limits, Recorder(stats, observer), opts, prepare
        )
        served.source = entry.source
        return served

    async def _retire(self, served: ServedVersion) -> None:
        self.retiring.add(served)
        self.residency.retiring(served)
        try:
            await served.drain(self.settings.drain_seconds)
        finally:
            self.retiring.discard(served)
            self.residency.release(served)
            served.recorder.stats.memory_bytes = 0
        log.info("%s/%s: drained and unloaded", served.model, served.version)
        self._changed(served.model)

    # ------------------------------------------------------- memory limit

    def _evictable(self) -> Iterator[ServedVersion]:
        """Loaded versions a load may evict: all but those that requests are waiting to use."""
        for entry in self.models.values():
            if entry.current is not None and not entry.waiters:
                yield entry.current

    def _evict(self, served: ServedVersion, for_ref: str) -> None:
        """Stop serving `served` (its model turns cold) and drain it; its bytes are free once closed."""
        entry = self.models.get(served.model)
        if entry is not None and entry.current is served:
            entry.current = None
            entry.cold = True
            entry.evicted = served.version
        served.recorder.stats.evictions += 1
        self._spawn(self._retire(served))

    def _loaded(self, served: ServedVersion, ns: int, cold: bool) -> None:
        stats = served.recorder.stats
        stats.loads.add(ns)
        stats.last_load_ns = ns
        if cold:
            stats.cold_loads.add(ns)
        if self.metrics is not None:
            self.metrics.loaded(served.model, served.version, ns, cold)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _retrieved(task: asyncio.Task[None]) -> None:
    """A cold load whose requests all gave up still has its failure read (and logged by the manager)."""
    if not task.cancelled():
        task.exception()


def _holds(entries: Sequence[ModelEntry], entry: ModelEntry) -> bool:
    """`entry in entries` by identity (two entries of one target are not the same entry)."""
    return any(e is entry for e in entries)


def _clip(value: str) -> str:
    shown = value[:64].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(value) > 64 else "")


__all__ = ["ModelEntry", "ModelManager", "NotLoaded", "parse_model_ref"]
