"""What this replica serves, declared in the registry, and how it converges to it.

Three sources declare what a served name serves, the first that names it
winning: a deployment of that name (the registry's record, the same for
every replica); MAAS_INFERENCE_MODELS (this replica's own list); and, with
`serve_alias` set (maas up sets `production`), that alias of every model that
has it, under the model's own name. Convergence is level-based: whatever an
event says, the converger reads what the registry holds now (the deployment,
the model list) and brings the served name to it through `ModelManager.apply`
(load, warm, swap, drain), so a replayed, reordered or missed event cannot
leave a replica behind: every (re)connect of the event stream, and every
`resync_seconds`, lists everything again. A replica that starts, restarts or
reconnects therefore converges with no setting of its own.

RepositoryModelLoad and RepositoryModelUnload act on the declaration, not on
this process alone: a load writes the deployment of that name (so every
replica serves it, and this one after a restart), then waits for this replica
to serve it; an unload deletes it. Each replica reports what it serves of
each deployment (`reports`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from maas.common import errors, names
from maas.common.loops import Coalescer
from maas.inference import converters
from maas.inference.domain import ModelOptions, ServedTarget, Target
from maas.inference.manager import ModelManager, parse_model_ref
from maas.inference.reports import Reporter, replica_status
from maas.inference.settings import InferenceSettings
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.inference.convergence")

DEPLOYMENT_EVENTS = frozenset(
    {rpb.EVENT_TYPE_DEPLOYMENT_CREATED, rpb.EVENT_TYPE_DEPLOYMENT_UPDATED, rpb.EVENT_TYPE_DEPLOYMENT_DELETED}
)
MAX_PAGES = 1000  # of 100 deployments or 500 models: a bound on a listing, not a limit met in practice


@dataclass(frozen=True)
class Declared:
    """What one served name should serve, and the deployment generation it comes from (0: not a deployment)."""

    targets: tuple[ServedTarget, ...]
    options: ModelOptions
    generation: int = 0


class Converger:
    def __init__(self, manager: ModelManager, settings: InferenceSettings, replica: str) -> None:
        self.manager = manager
        self.registry = manager.registry
        self.settings = settings
        self.replica = replica
        self.configured: dict[str, Declared] = {}
        """MAAS_INFERENCE_MODELS: this replica's own list."""
        self.deployments: dict[str, rpb.Deployment] = {}
        """The registry's deployments, as last read."""
        self.aliased: set[str] = set()
        """Models that have `serve_alias` (served under their own name by the default policy)."""
        self.withheld: set[str] = set()
        """Names the default policy would serve that a client unloaded here (until loaded again or a restart)."""
        self.applied: dict[str, Declared] = {}
        """What each served name was last brought to."""
        self.reporter = Reporter(self.registry, replica, self._status)
        self._converging: Coalescer[str] = Coalescer(self._converge_logged, "converge")
        self._reading: Coalescer[str] = Coalescer(self._read_deployment, "deployment")
        self._following: Coalescer[tuple[str, str]] = Coalescer(self._follow, "follow")
        manager.on_change = self._changed

    # ------------------------------------------------------------ declared

    def declared(self, name: str) -> Declared | None:
        deployment = self.deployments.get(name)
        if deployment is not None:
            targets, options = converters.from_deployment(deployment)
            return Declared(targets, options, deployment.generation)
        if name in self.configured:
            return self.configured[name]
        alias = self.settings.serve_alias
        if alias and name in self.aliased and name not in self.withheld:
            return Declared((ServedTarget(name, Target(alias=alias)),), ModelOptions())
        return None

    def names(self) -> set[str]:
        """Every name declared or served."""
        served = self.manager.models.keys() | self.manager.upcoming.keys()
        policy = self.aliased - self.withheld if self.settings.serve_alias else set()
        return set(self.deployments) | set(self.configured) | policy | set(self.applied) | served

    # ------------------------------------------------------------- convergence

    async def start(self) -> None:
        """At start: read the registry (best effort: the follower reads it again once it connects), then converge."""
        for ref in self.settings.models:
            name, target = parse_model_ref(ref, self.settings.default_alias)
            self.configured[name] = Declared((ServedTarget(name, target),), ModelOptions())
        try:
            await self.refresh()
        except errors.MaasError as exc:
            log.warning("deployments not read at start (%s); the follower reads them once it connects", exc.message)
        await self.converge_all(log_failures=True)

    async def resync(self) -> None:
        """Read every deployment and model again, converge every name, re-resolve every alias, report everything."""
        await self.refresh()
        await self.converge_all()
        await self.manager.sync_all()
        for name in self.deployments:
            self.reporter.mark(name)

    async def refresh(self) -> None:
        deployments: dict[str, rpb.Deployment] = {}
        token = ""
        for _ in range(MAX_PAGES):
            page = await self.registry.list_deployments(page_size=100, page_token=token)
            deployments.update((d.name, d) for d in page.deployments)
            token = page.next_page_token
            if not token:
                break
        aliased: set[str] = set()
        alias = self.settings.serve_alias
        token = ""
        for _ in range(MAX_PAGES if alias else 0):
            models = await self.registry.list_models(page_size=500, page_token=token)
            aliased.update(m.name for m in models.models if alias in m.aliases)
            token = models.next_page_token
            if not token:
                break
        self.deployments, self.aliased = deployments, aliased

    async def converge_all(self, *, log_failures: bool = False) -> None:
        names_ = sorted(self.names())
        results = await asyncio.gather(*(self.converge(n) for n in names_), return_exceptions=True)
        for name, result in zip(names_, results, strict=True):
            if isinstance(result, BaseException):
                log.error("%s: convergence failed", name, exc_info=result)
            elif log_failures:
                for failure in result:
                    log.warning("%s: not served yet (%s); the follower retries", name, failure.message)

    async def converge(self, name: str, *, retry_failed: bool = False, evict: bool = False) -> list[errors.MaasError]:
        """Bring `name` to what is declared for it now; why each target that could not be loaded failed."""
        want = self.declared(name)
        if want is None:
            self.applied.pop(name, None)
            if name in self.manager.models or name in self.manager.upcoming:
                await self.manager.apply(name, ())
            return []
        self.applied[name] = want
        return await self.manager.apply(name, want.targets, want.options, retry_failed=retry_failed, evict=evict)

    async def _converge_logged(self, name: str) -> None:
        for failure in await self.converge(name):
            log.info("%s: %s", name, failure.message)

    async def idle(self) -> None:
        """Wait for the work that events started (tests and a clean stop)."""
        for runner in (self._reading, self._following, self._converging):
            await runner.idle()

    # ----------------------------------------------------------------- events

    def on_event(self, event: rpb.Event) -> None:
        """An event says where to look again; what is served follows what the registry holds now."""
        kind = event.type
        if kind in DEPLOYMENT_EVENTS:
            self._reading.mark(event.deployment)
        elif kind in (rpb.EVENT_TYPE_ALIAS_MOVED, rpb.EVENT_TYPE_ALIAS_DELETED):
            if event.alias == self.settings.serve_alias:
                if kind == rpb.EVENT_TYPE_ALIAS_MOVED:
                    self.aliased.add(event.model)
                else:
                    self.aliased.discard(event.model)
                self._converging.mark(event.model)
            self._following.mark((event.model, event.alias))
        elif kind == rpb.EVENT_TYPE_VERSION_READY:
            self._following.mark((event.model, ""))
        elif kind == rpb.EVENT_TYPE_MODEL_DELETED:
            self.aliased.discard(event.model)
            self._converging.mark(event.model)

    async def _read_deployment(self, name: str) -> None:
        try:
            self.deployments[name] = await self.registry.get_deployment(name)
        except errors.NotFound:
            self.deployments.pop(name, None)
        await self._converge_logged(name)

    async def _follow(self, key: tuple[str, str]) -> None:
        model, alias = key
        touched = await self.manager.follow(model, alias or None)
        for name in touched:
            if name in self.manager.upcoming:  # a layout that waited for this version may swap in now
                self._converging.mark(name)

    # -------------------------------------------------------- load / unload

    async def load(self, name: str, target: Target | None, options: ModelOptions | None) -> None:
        """RepositoryModelLoad: declare `name` in the registry (a deployment), then serve it here; raises why not.

        Without a target the name keeps what is declared for it (a deployment's
        targets, or what this replica serves), else the default alias where the
        model has it, else its latest READY version. The configuration, given or
        not, becomes the deployment's serving options: a load without one is
        served with the replica's own settings again.
        """
        names.model_name(name)
        if target is not None:
            targets: tuple[ServedTarget, ...] = (ServedTarget(name, target),)
        else:
            targets = await self._kept_targets(name)
        deployment = await self._write(name, converters.to_deployment_spec(targets, options))
        self.deployments[name] = deployment
        self.withheld.discard(name)
        failures = await self.converge(name, retry_failed=True, evict=True)
        if failures:
            raise failures[0]

    async def _kept_targets(self, name: str) -> tuple[ServedTarget, ...]:
        try:
            declared_now = converters.from_deployment(await self.registry.get_deployment(name))[0]
            return declared_now
        except errors.NotFound:
            pass
        declared = self.declared(name)
        if declared is not None:
            return declared.targets
        # What Triton's load_model would: the default alias where the model has one, else its latest version.
        alias = self.settings.default_alias
        try:
            await self.registry.resolve(f"{name}@{alias}")
        except errors.NotFound:
            alias = names.LATEST
        return (ServedTarget(name, Target(alias=alias)),)

    async def _write(self, name: str, spec: rpb.DeploymentSpec) -> rpb.Deployment:
        try:
            try:
                return await self.registry.create_deployment(name, spec)
            except errors.AlreadyExists:
                return await self.registry.update_deployment(name, spec)
        except errors.PermissionDenied as exc:
            raise errors.FailedPrecondition(
                f"a load declares deployment '{name}' in the registry, which refused this service's registry token "
                f"({exc.message}): it needs the write scope (or declare it with maas deploy)"
            ) from None

    async def unload(self, name: str) -> None:
        """RepositoryModelUnload: delete the deployment of `name` (every replica stops serving it), then stop here."""
        names.model_name(name)
        deleted = False
        try:
            await self.registry.get_deployment(name)
            await self.registry.delete_deployment(name)
            deleted = True
        except errors.NotFound:
            pass
        except errors.PermissionDenied as exc:
            raise errors.FailedPrecondition(
                f"'{name}' is a deployment, and the registry refused to delete it with this service's registry "
                f"token ({exc.message}): it needs the admin scope (or remove it with maas deployments rm)"
            ) from None
        self.deployments.pop(name, None)
        served = name in self.manager.models or name in self.manager.upcoming
        self.configured.pop(name, None)
        if name in self.aliased:
            self.withheld.add(name)
        if not (deleted or served):
            raise errors.NotFound(f"model '{name}' is not loaded")
        await self.converge(name)

    # ---------------------------------------------------------------- reports

    def _changed(self, name: str) -> None:
        declared = self.applied.get(name)
        if declared is not None and declared.generation:
            self.reporter.mark(name)

    def _status(self, name: str) -> rpb.ReplicaStatus | None:
        declared = self.applied.get(name)
        if declared is None or not declared.generation:
            return None
        return replica_status(self.replica, declared.generation, self.manager, name)

    async def stop(self) -> None:
        for runner in (self._reading, self._following, self._converging):
            await runner.stop()
        await self.reporter.stop()
