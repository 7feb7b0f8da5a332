"""Wiring of the trainer process: job store, launcher, runners, scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grpc import aio

from maas.common import plugins
from maas.common.clients.registry import RegistryClient
from maas.common.loops import LoopService
from maas.common.server import Health
from maas.common.sql import Database, OutageLog
from maas.trainer import entities, optimize_source
from maas.trainer.db import migrate
from maas.trainer.db.store import JobStore
from maas.trainer.derived import DerivedHandoff
from maas.trainer.handoff import Handoff
from maas.trainer.launcher import Launcher
from maas.trainer.runner import JobRunner
from maas.trainer.scheduler import Scheduler
from maas.trainer.service import JobService
from maas.trainer.servicer import TrainerServicer
from maas.trainer.settings import TrainerSettings
from maas.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger("maas.trainer")

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name


class TrainerApp:
    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.owner = settings.resolved_replica_id()
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="trainer")
        self.db = Database(settings.resolved_database_url(), pool_size=8)
        self.store = JobStore(self.db)
        self.launcher = Launcher(settings.warm_workers)
        self._registry: RegistryClient | None = None
        self.jobs = JobService(
            self.store,
            data_root=settings.resolved_data_root(),
            max_world_size=settings.max_world_size,
            max_runtime=settings.max_runtime_seconds,
            in_thread=self.in_thread,
            poll_interval=settings.poll_interval,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.scheduler: Scheduler | None = None
        self._watchdog: _Watchdog | None = None

    async def in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def register(self, server: aio.Server) -> None:
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(self.jobs), server)

    async def start(self, health: Health) -> None:
        await self.in_thread(migrate.upgrade, self.db)
        # The catalog is read once, here: a broken plugin is logged (and listed) now, not at a job.
        for kind in plugins.KINDS:
            await self.in_thread(plugins.installed().entries, kind)
        self.settings.jobs_dir().mkdir(parents=True, exist_ok=True)
        self.settings.resolved_data_root().mkdir(parents=True, exist_ok=True)
        self._registry = RegistryClient(self.settings.registry_channel())
        self.handoff = Handoff(self._registry, self.store, in_thread=self.in_thread)
        self.derived = DerivedHandoff(self._registry, self.handoff, self.store, in_thread=self.in_thread)
        registry = self._registry
        self.jobs.find_source = lambda ref: optimize_source.find(registry, ref)
        await self.launcher.start()
        self.scheduler = Scheduler(
            self.store,
            owner=self.owner,
            max_concurrent=self.settings.max_concurrent_jobs,
            interval=self.settings.poll_interval,
            heartbeat_interval=self.settings.heartbeat_interval,
            stale_after=self.settings.stale_after,
            running=self.jobs.runners,  # type: ignore[arg-type]
            launch=self._launch,
            in_thread=self.in_thread,
        )
        self.jobs.on_submit = self.scheduler.wake
        self.scheduler.start()
        self._watchdog = _Watchdog(self, health)
        await self._watchdog.run_once()
        self._watchdog.start()

    def _launch(self, job: entities.Job) -> None:
        runner = JobRunner(
            job,
            store=self.store,
            launcher=self.launcher,
            handoff=self.handoff,
            jobs_dir=self.settings.jobs_dir(),
            runtime={
                "data_root": str(self.settings.resolved_data_root()),
                "allow_download": self.settings.allow_download,
                "verify_datasets": self.settings.verify_datasets,
                "device": self.settings.device,
                "threads": self.settings.default_threads,
                "onnx_tolerance": self.settings.onnx_tolerance,
            },
            grace=self.settings.cancel_grace_seconds,
            sync_interval=self.settings.metrics_sync_interval,
            in_thread=self.in_thread,
            notify=self.jobs.notify,
            derived=self.derived,
        )
        self.jobs.runners[job.job_id] = runner

        async def drive() -> None:
            try:
                await runner.run()
            finally:
                self.jobs.runners.pop(job.job_id, None)
                self.jobs.notify(job.job_id)
                if self.scheduler is not None:
                    self.scheduler.wake()

        task = asyncio.create_task(drive(), name=f"job-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Workers checkpoint and stop; their jobs stay RUNNING and resume at the next start."""
        if self.scheduler is not None:
            self.scheduler.accepting = False
            await self.scheduler.stop()
        if self._watchdog is not None:
            await self._watchdog.stop()
        for runner in list(self.jobs.runners.values()):
            runner.shutdown()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.cancel_grace_seconds + 10)
        for task in self._tasks:
            task.cancel()
        await self.launcher.close()
        if self._registry is not None:
            with contextlib.suppress(Exception):
                await self._registry.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.db.dispose()


class _Watchdog(LoopService):
    """Health follows the job database."""

    name = "trainer-watchdog"

    def __init__(self, app: TrainerApp, health: Health) -> None:
        super().__init__(2.0)
        self._app = app
        self._health = health
        self._outage = OutageLog(log, "MAAS_TRAINER_DATABASE_URL")

    async def run_once(self) -> None:
        alive = self._outage.update(await self._app.in_thread(self._app.db.probe))
        await self._health.set(SERVICE_NAME, alive)
