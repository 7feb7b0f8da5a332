"""Wiring of the registry process: database, store, domain, servicer, loops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from grpc import aio

from maas.common.loops import LoopService
from maas.common.server import Health
from maas.common.sql import OutageLog
from maas.registry.db import migrate
from maas.registry.db.database import Database
from maas.registry.domain.abandoned import AbandonedVersions, LiveUploads
from maas.registry.domain.aliases import AliasService
from maas.registry.domain.artifacts import ArtifactService
from maas.registry.domain.deployments import DeploymentService
from maas.registry.domain.events import EventHub
from maas.registry.domain.models import ModelService
from maas.registry.domain.runs import RunService
from maas.registry.domain.versions import VersionService
from maas.registry.servicer import Domain, RegistryServicer
from maas.registry.settings import RegistrySettings
from maas.registry.storage.store import LocalArtifactStore
from maas.registry.storage.sweeper import UploadSweeper
from maas.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger("maas.registry")

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


class RegistryApp:
    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.db_pool_size, thread_name_prefix="registry")
        self.db = Database(
            settings.resolved_database_url(),
            pool_size=settings.db_pool_size,
            connect_timeout=settings.db_connect_timeout,
        )
        self.store = LocalArtifactStore(settings.resolved_artifact_root())
        self.hub = EventHub(self.db, self.executor, settings.event_poll_interval)
        uploads = LiveUploads(self.db, self.executor)
        artifacts = ArtifactService(
            self.db,
            self.store,
            self.executor,
            max_bytes=settings.max_artifact_bytes,
            trusted_formats=settings.trusted_formats,
            on_event=self.hub.publish,
            uploads=uploads,
        )
        self.domain = Domain(
            models=ModelService(self.db, self.hub.publish, artifacts.release),
            versions=VersionService(
                self.db,
                trusted_formats=settings.trusted_formats,
                on_event=self.hub.publish,
                on_blobs_released=artifacts.release,
            ),
            aliases=AliasService(self.db, self.hub.publish),
            runs=RunService(self.db),
            artifacts=artifacts,
            events=self.hub,
            deployments=DeploymentService(self.db, self.hub.publish),
        )
        self._watchdog: _Watchdog | None = None
        self._sweeper = UploadSweeper(self.store, self.executor, settings.stale_upload_seconds)
        # Started by the watchdog once the database is migrated.
        self.abandoned = AbandonedVersions(
            self.db, uploads, self.executor, settings.pending_version_seconds, self.hub.publish
        )

    def register(self, server: aio.Server) -> None:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(self.domain, self.executor), server)

    async def start(self, health: Health) -> None:
        self._watchdog = _Watchdog(self, health)
        # The first check runs now, so a reachable database means SERVING at once.
        await self._watchdog.run_once()
        self._watchdog.start()
        # Apart from the watchdog: the store needs no database, and its period is its own.
        self._sweeper.start()

    async def stop(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
        await self._sweeper.stop()
        await self.abandoned.stop()
        await self.hub.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.db.dispose()


class _Watchdog(LoopService):
    """Migrates once the database is reachable, then keeps health in step with it."""

    name = "registry-watchdog"

    def __init__(self, app: RegistryApp, health: Health) -> None:
        super().__init__(app.settings.health_interval)
        self._app = app
        self._health = health
        self._ready = False
        self._outage = OutageLog(log, "MAAS_REGISTRY_DATABASE_URL")

    async def run_once(self) -> None:
        app = self._app
        loop = asyncio.get_running_loop()
        if not self._ready:
            try:
                if app.settings.auto_migrate:
                    await loop.run_in_executor(app.executor, migrate.upgrade, app.db)
                await app.hub.prime()
            except Exception as exc:  # noqa: BLE001 - stay up, NOT_SERVING, and retry
                log.warning(
                    "database not ready (%s); NOT_SERVING, retrying every %gs: check that the database runs "
                    "and that MAAS_REGISTRY_DATABASE_URL points at it",
                    app.db.failure_cause(exc),
                    app.settings.health_interval,
                )
                await self._health.set(SERVICE_NAME, False)
                return
            app.hub.start()
            app.abandoned.start()
            self._ready = True
        alive = self._outage.update(await loop.run_in_executor(app.executor, app.db.probe))
        await self._health.set(SERVICE_NAME, alive)
