"""The model manager: which versions this process serves, and how they change.

Each model entry has a target - an alias to follow or a pinned version. To
reach it the manager resolves it through the registry, fetches the verified
artifact, builds the runtime off the event loop, warms it up, probes whether
batching can stack it, and only then swaps it in: one assignment, so every
request sees either the old version or the new one. The old version is then
drained (its in-flight requests finish) and closed. A version that cannot be
built is recorded as failed with its reason, and whatever was serving goes on
serving.

A model named in the configuration is kept even while the registry does not
have it (or its alias, or its pinned version) yet: the follower syncs it when
an event says it may have appeared, and on every resync. A model asked for by
RepositoryModelLoad that the registry does not know is refused and not kept,
so clients cannot make the service remember names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from maas.common import errors, names, text_task
from maas.common.clients.registry import RegistryClient
from maas.inference import runtimes, text_runtime
from maas.inference.batcher import BatchPolicy
from maas.inference.cache import ArtifactCache, choose_artifact, text_artifacts
from maas.inference.converters import signature_from_registry
from maas.inference.domain import ModelOptions, State, Target
from maas.inference.metrics import InferenceMetrics
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
        self.retiring: set[ServedVersion] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._options = runtimes.RuntimeOptions(settings.device, settings.intra_op_threads)

    # ---------------------------------------------------------------- lookup

    def lookup(self, name: str, version: str) -> ServedVersion:
        entry = self.models.get(name)
        if entry is None:
            raise errors.NotFound(f"model '{_clip(name)}' is not loaded")
        served = entry.current
        if served is None:
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

    def followed(self) -> dict[str, str]:
        return {name: e.target.alias for name, e in self.models.items() if e.target.alias}

    def awaiting_first_version(self, name: str) -> bool:
        """Whether `name` is kept but has nothing served yet (any new version may be the one)."""
        entry = self.models.get(name)
        return entry is not None and entry.current is None

    def pending(self) -> dict[tuple[str, int], int]:
        out = {}
        for served in [*(e.current for e in self.models.values()), *self.retiring]:
            if served is not None:
                out[(served.model, served.version)] = served.inflight
        return out

    def states(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for e in self.models.values():
            if e.current is not None:
                counts[State.READY.value] += 1
            if e.loading:
                counts[State.LOADING.value] += 1
            if e.failure is not None:
                counts[State.UNAVAILABLE.value] += 1
        counts[State.UNLOADING.value] += len(self.retiring)
        return counts

    # ---------------------------------------------------------- load/unload

    async def load(self, name: str, target: Target | None = None, options: ModelOptions | None = None) -> ServedVersion:
        """Serve `name` at `target` (keeping the model's target when None); raises why it could not."""
        names.model_name(name)
        entry = self.models.get(name)
        created = entry is None
        if entry is None:
            entry = self.models[name] = ModelEntry(name, target or Target(alias=self.settings.default_alias))
        elif target is not None:
            entry.target = target
        if options is not None:
            entry.options = options
        try:
            try:
                served = await self._reconcile(entry, retry_failed=True)
            except errors.NotFound:
                if not (created and target is None):
                    raise
                # A bare name loads what Triton's load_model would: the default alias where the model has
                # one, else its latest READY version (followed as versions are added).
                entry.target = Target(alias=names.LATEST)
                served = await self._reconcile(entry, retry_failed=True)
        except (errors.NotFound, errors.InvalidArgument):
            # Nothing in the registry to serve under this name: do not keep (or retry) it.
            if created and entry.current is None and self.models.get(name) is entry:
                del self.models[name]
            raise
        assert served is not None
        return served

    async def configure(self, name: str, target: Target) -> ServedVersion:
        """Serve a configured model, and keep it even when the registry does not have it yet.

        Raises why it is not served now; the entry stays, so the follower loads
        it when it appears.
        """
        names.model_name(name)
        entry = self.models.get(name)
        if entry is None:
            entry = self.models[name] = ModelEntry(name, target)
        served = await self._reconcile(entry, retry_failed=True)
        assert served is not None
        return served

    async def unload(self, name: str) -> None:
        entry = self.models.pop(name, None)
        if entry is None:
            raise errors.NotFound(f"model '{_clip(name)}' is not loaded")
        async with entry.lock:
            if entry.current is not None:
                served, entry.current = entry.current, None
                await self._retire(served)

    async def sync(self, name: str) -> None:
        """Bring a model to its target again (after an alias moved, or a failed load)."""
        entry = self.models.get(name)
        if entry is None or (entry.current is not None and not entry.target.alias):
            return
        await self._reconcile(entry, retry_failed=False)

    async def sync_all(self) -> None:
        for name in list(self.models):
            try:
                await self.sync(name)
            except errors.NotFound as exc:
                log.info("%s: nothing to serve yet: %s", name, exc.message)
            except errors.MaasError as exc:
                log.warning("sync of %s failed: %s", name, exc.message)

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -------------------------------------------------------------- internals

    async def _reconcile(self, entry: ModelEntry, *, retry_failed: bool) -> ServedVersion | None:
        async with entry.lock:
            try:
                version = await self.registry.resolve(entry.target.ref(entry.name))
            except errors.NotFound as exc:
                entry.waiting = exc.message
                raise
            entry.waiting = None
            current = entry.current
            if current is not None and current.version == version.version and current.options == entry.options:
                return current
            failed = entry.failure
            if not retry_failed and failed and failed.permanent and failed.version == version.version:
                return current
            entry.loading = version.version
            try:
                served = await self._build(entry, version)
            except errors.MaasError as exc:
                permanent = not isinstance(exc, errors.Unavailable)
                entry.failure = Failure(version.version, exc.message, permanent)
                log.warning("%s/%s failed to load: %s", entry.name, version.version, exc.message)
                raise
            finally:
                entry.loading = 0
            if self.models.get(entry.name) is not entry:  # unloaded meanwhile
                self._spawn(self._retire(served))
                raise errors.Aborted(f"model '{entry.name}' was unloaded while it loaded")
            entry.failure = None
            entry.current = served  # the swap: new requests see the new version from here on
            log.info(
                "%s: serving version %s%s", entry.name, served.version, f" (was {current.version})" if current else ""
            )
            if current is not None:
                self._spawn(self._retire(current))
            return served

    async def _build(self, entry: ModelEntry, version: rpb.ModelVersion) -> ServedVersion:
        ref = f"{entry.name}/{version.version}"
        if version.status != rpb.VERSION_STATUS_READY:
            raise errors.FailedPrecondition(f"{ref} is not READY in the registry")
        arch = json_format.MessageToDict(version.architecture)
        try:
            max_length = text_task.max_length_of(arch)
        except errors.InvalidArgument as exc:
            raise errors.FailedPrecondition(f"{ref} cannot be served: {exc.message}") from None
        if max_length is not None:
            artifact, tokenizer_artifact = text_artifacts(version)
            tokenizer = await self.cache.fetch(self.registry, version, tokenizer_artifact)
        else:
            artifact = choose_artifact(version, self.settings.preferred_format)
        path = await self.cache.fetch(self.registry, version, artifact)
        settings = self.settings
        opts = entry.options
        max_rows = opts.max_batch_size or settings.max_batch_size
        preferred = (
            opts.preferred_batch_sizes
            if opts.preferred_batch_sizes is not None
            else tuple(settings.preferred_batch_sizes)
        )
        declared = signature_from_registry(version.signature)

        def build() -> tuple[runtimes.Runtime, Signature, int | None]:
            try:
                runtime: runtimes.Runtime
                if max_length is not None:
                    text, signature = text_runtime.load(path, tokenizer, max_length, declared, self._options)
                    text_runtime.warm_up(text, signature, max_length)
                    return text, signature, 1  # stacked as it comes: see text_runtime
                if artifact.format == rpb.MODEL_FORMAT_SAFETENSORS:
                    runtime, signature = runtimes.load_torch(arch, path, self._options)
                else:
                    runtime, signature = runtimes.load_onnx(path, declared, self._options)
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
        return ServedVersion(
            entry.name, version.version, runtime, signature, policy, limits, Recorder(stats, observer), opts, prepare
        )

    async def _retire(self, served: ServedVersion) -> None:
        self.retiring.add(served)
        try:
            await served.drain(self.settings.drain_seconds)
        finally:
            self.retiring.discard(served)
        log.info("%s/%s: drained and unloaded", served.model, served.version)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _clip(value: str) -> str:
    shown = value[:64].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(value) > 64 else "")


__all__ = ["ModelEntry", "ModelManager", "parse_model_ref"]
