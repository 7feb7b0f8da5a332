"""Runs one job to its end: launch, watch, retry, time out, hand off.

The runner turns what the worker reports into the job's persisted event log
(batched: one transaction per burst of lines), restarts a crashed worker
from its last checkpoint up to max_retries, stops the group on cancel or
when the run time is up, and on success hands the result to the registry.
On a trainer shutdown the worker checkpoints and the job stays RUNNING for
the next start to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.common import errors
from maas.trainer import entities
from maas.trainer.db.store import EventSpec, JobStore
from maas.trainer.derived import DerivedHandoff
from maas.trainer.handoff import Handoff
from maas.trainer.launcher import Launcher, WorkerProcess
from maas.trainer.worker.loop import FATAL
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.trainer.runner")
STDERR_LINES = 500  # per attempt: enough for a traceback, bounded against floods


@dataclass
class Outcome:
    state: entities.JobState | None  # None: stays RUNNING (interrupted by shutdown)
    reason: str = ""


@dataclass
class Attempt:
    exported: dict[str, Any] | None = None
    fatal: str = ""
    stderr_tail: list[str] = field(default_factory=list)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class JobRunner:
    def __init__(
        self,
        job: entities.Job,
        *,
        store: JobStore,
        launcher: Launcher,
        handoff: Handoff,
        jobs_dir: Path,
        runtime: dict[str, Any],
        grace: float,
        sync_interval: float,
        in_thread: Callable[..., Awaitable[Any]],
        notify: Callable[[str], None],
        derived: DerivedHandoff | None = None,
    ) -> None:
        self.job = job
        self._derived = derived
        self.job_id = job.job_id
        self._store = store
        self._launcher = launcher
        self._handoff = handoff
        self.job_dir = jobs_dir / job.job_id
        self._runtime = runtime
        self._grace = grace
        self._sync_interval = sync_interval
        self._in_thread = in_thread
        self._notify = notify
        self._proc: WorkerProcess | None = None
        self._cancelled = False
        self._shutting_down = False
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ control

    def cancel(self) -> None:
        self._cancelled = True
        self._stopped.set()
        if self._proc is not None:
            self._proc.signal_all(signal.SIGTERM)

    def shutdown(self) -> None:
        self._shutting_down = True
        self._stopped.set()
        if self._proc is not None:
            self._proc.signal_all(signal.SIGTERM)

    async def _record(self, events: list[EventSpec] | None = None, **kwargs: Any) -> entities.Job:
        job = await self._in_thread(self._store.record, self.job_id, events or [], **kwargs)
        self.job = job
        self._notify(self.job_id)
        return job

    async def _log(self, message: str, level: str = "INFO") -> None:
        await self._record([("log", {"level": level, "message": message})])

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        sync = asyncio.create_task(self._sync_loop())
        try:
            outcome = await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s: runner failed", self.job_id)
            outcome = Outcome(entities.JobState.FAILED, f"internal error: {type(exc).__name__}")
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
        if outcome.state is None:
            await self._record(phase=entities.Phase.INTERRUPTED.value, reason="trainer stopped; resumes on restart")
            return
        await self._finish(outcome)

    async def _finish(self, outcome: Outcome) -> None:
        status = {
            entities.JobState.SUCCEEDED: rpb.RUN_STATUS_FINISHED,
            entities.JobState.FAILED: rpb.RUN_STATUS_FAILED,
            entities.JobState.CANCELLED: rpb.RUN_STATUS_KILLED,
        }[outcome.state]  # type: ignore[index]
        if outcome.state != entities.JobState.SUCCEEDED:
            # Best effort: the run's final metrics and status; the job's end does not wait on it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._handoff.sync_metrics(self.job_id), 10)
                await asyncio.wait_for(self._handoff.finish_run(self.job_id, status), 10)
        await self._record(state=outcome.state, phase=entities.Phase.DONE.value, reason=outcome.reason)
        if outcome.state == entities.JobState.SUCCEEDED:
            shutil.rmtree(self.job_dir / "checkpoint", ignore_errors=True)
        log.info("job %s %s %s", self.job_id, outcome.state.value, outcome.reason)  # type: ignore[union-attr]

    async def _run(self) -> Outcome:
        spec = self.job.spec
        export_dir = self.job_dir / "export"
        trained = (export_dir / "result.json").exists() and self.job.phase == entities.Phase.REGISTERING.value
        derived = self._derived if spec.optimize is not None else None
        if not trained and derived is not None and not (self.job_dir / "source" / "version.json").exists():
            outcome = await self._until_stopped(derived.fetch(self.job, self.job_dir / "source"), "fetching")
            if outcome is not None:
                return outcome
        if not trained:
            outcome = await self._train()
            if outcome is not None:
                return outcome
        if self._cancelled:
            return Outcome(entities.JobState.CANCELLED, "cancelled")
        if derived is None and not spec.register_as:
            return Outcome(entities.JobState.SUCCEEDED, "trained (not registered)")
        await self._record(phase=entities.Phase.REGISTERING.value)
        register = asyncio.create_task(
            self._handoff.register(self.job, export_dir, self._log)
            if derived is None
            else derived.register(self.job, export_dir, self._log)
        )
        stop = asyncio.create_task(self._stopped.wait())
        done, _ = await asyncio.wait({register, stop}, return_when=asyncio.FIRST_COMPLETED)
        if register not in done:
            register.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await register
            if self._shutting_down:
                return Outcome(None)
            return Outcome(entities.JobState.CANCELLED, "cancelled while registering")
        stop.cancel()
        try:
            job = register.result()
        except errors.MaasError as exc:
            return Outcome(entities.JobState.FAILED, f"registry refused the result: {exc.message}")
        if spec.optimize is not None and not spec.register_as:
            formats = ", ".join(spec.optimize.formats)
            where = f"{job.registered_model}/{job.registered_version}"
            return Outcome(entities.JobState.SUCCEEDED, f"added {formats} to {where}")
        return Outcome(
            entities.JobState.SUCCEEDED,
            f"registered {job.registered_model}/{job.registered_version}"
            + (f", promoted to {job.promoted_alias}" if job.promoted_alias else ""),
        )

    async def _until_stopped(self, work: Awaitable[Any], what: str) -> Outcome | None:
        """Run `work` unless the job is cancelled or the trainer stops first; None when it completed."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stopped.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if self._shutting_down:
                return Outcome(None)
            return Outcome(entities.JobState.CANCELLED, f"cancelled while {what}")
        try:
            task.result()
        except errors.MaasError as exc:
            return Outcome(entities.JobState.FAILED, exc.message)
        return None

    async def _train(self) -> Outcome | None:
        spec = self.job.spec
        self.job_dir.mkdir(parents=True, exist_ok=True)
        attempt = self.job.attempt
        if (self.job_dir / "spec.json").exists() and self.job.phase != entities.Phase.INTERRUPTED.value:
            # A worker of this job ran under a trainer that died without stopping it (a clean
            # stop says 'interrupted'): it was lost, and resuming from its checkpoint is a new
            # attempt, as a retry after a crashed worker is.
            attempt += 1
            note = f"worker lost with the trainer; resuming from the last checkpoint as attempt {attempt}"
            await self._record(
                [("log", {"level": "WARNING", "message": note})],
                phase=entities.Phase.RETRYING.value,
                attempt=attempt,
            )
        doc = {"spec": spec.stored(), "runtime": {**self._runtime, "threads": spec.threads or self._runtime["threads"]}}
        (self.job_dir / "spec.json").write_text(json.dumps(doc))
        deadline = time.monotonic() + spec.max_runtime_seconds - self._elapsed()
        world = spec.world_size
        while True:
            if self._cancelled:
                return Outcome(entities.JobState.CANCELLED, "cancelled")
            if self._shutting_down:
                return Outcome(None)
            await self._record(phase=entities.Phase.STARTING.value, attempt=attempt)
            if world > 1:
                self._proc = await self._launcher.group(self.job_dir, world, spec.max_retries)
            else:
                self._proc = await self._launcher.single(self.job_dir)
            await self._log(f"attempt {attempt}: started worker pid {self._proc.pid} (world size {world})")
            result = Attempt()
            code, timed_out = await self._watch(self._proc, result, deadline)
            self._proc = None
            if self._cancelled:
                return Outcome(entities.JobState.CANCELLED, "cancelled")
            if timed_out:
                return Outcome(entities.JobState.FAILED, f"exceeded max run time of {spec.max_runtime_seconds}s")
            if code == 0 and result.exported is not None:
                return None
            if self._shutting_down:
                return Outcome(None)
            if result.fatal or code == FATAL:
                return Outcome(entities.JobState.FAILED, result.fatal or "worker reported a fatal error")
            why = describe_exit(code)
            if code == 0:
                why = "worker exited without exporting a model"
            tail = " | ".join(result.stderr_tail[-3:])
            retries = spec.max_retries
            if world > 1 or attempt >= retries:
                return Outcome(
                    entities.JobState.FAILED,
                    f"worker {why} on attempt {attempt} (max_retries {retries}){': ' + tail if tail else ''}",
                )
            attempt += 1
            note = f"worker {why}; retrying from the last checkpoint as attempt {attempt}"
            await self._record(
                [("log", {"level": "WARNING", "message": note})],
                phase=entities.Phase.RETRYING.value,
                attempt=attempt,
            )

    def _elapsed(self) -> float:
        if not self.job.started_at_ms:
            return 0.0
        return max(0.0, time.time() - self.job.started_at_ms / 1000)

    async def _watch(self, proc: WorkerProcess, result: Attempt, deadline: float) -> tuple[int, bool]:
        """Persist what the worker says until it exits; stop it on cancel or deadline."""
        queue: asyncio.Queue[EventSpec | dict[str, Any] | None] = asyncio.Queue()

        async def pump_stdout() -> None:
            async for event in proc.events():
                await queue.put(event)
            await queue.put(None)

        async def pump_stderr() -> None:
            async for line in proc.stderr_lines():
                result.stderr_tail = ([*result.stderr_tail, line])[-20:]
                if len(result.stderr_tail) <= STDERR_LINES:
                    await queue.put(("log", {"level": "STDERR", "message": line}))

        readers = [asyncio.create_task(pump_stdout()), asyncio.create_task(pump_stderr())]
        timed_out = False
        open_stdout = True
        try:
            while open_stdout:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    timed_out = True
                    break
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=min(timeout, 1.0))
                except TimeoutError:
                    if self._cancelled or self._shutting_down:
                        break
                    continue
                batch = [first]
                await asyncio.sleep(0.05)  # let a burst of lines arrive: one transaction for all
                while not queue.empty():
                    batch.append(queue.get_nowait())
                if None in batch:
                    open_stdout = False
                await self._persist([b for b in batch if b is not None], result)
        finally:
            if timed_out or self._cancelled or self._shutting_down:
                code = await proc.stop(self._grace)
            else:
                code = await proc.wait()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            leftovers = []
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    leftovers.append(item)
            if leftovers:
                await self._persist(leftovers, result)
        return code, timed_out

    async def _persist(self, items: list[EventSpec | dict[str, Any]], result: Attempt) -> None:
        events: list[EventSpec] = []
        fields: dict[str, Any] = {}
        phase = None
        for item in items:
            if isinstance(item, tuple):
                events.append(item)
                continue
            kind = item.pop("kind")
            if kind == "step":
                events.append(("step", item))
                phase = entities.Phase.TRAINING.value
            elif kind == "epoch":
                events.append(("epoch", item))
                fields["epoch"] = int(item["epoch"])
                fields["metrics"] = {**fields.get("metrics", {}), **item["metrics"]}
            elif kind == "log":
                events.append(
                    ("log", {"level": str(item.get("level", "INFO")), "message": str(item.get("message", ""))})
                )
            elif kind == "started":
                optimizing = self.job.spec.optimize is not None
                phase = (entities.Phase.OPTIMIZING if optimizing else entities.Phase.TRAINING).value
                restart = int(item.get("restart", 0))
                note = f" (torchrun restart {restart})" if restart else ""
                resumed = f", resumed at epoch {int(item['epoch']) + 1}" if item.get("resumed") else ""
                doing = "optimizing" if optimizing else "training"
                events.append(
                    ("log", {"level": "INFO", "message": f"worker pid {item.get('pid')} {doing}{resumed}{note}"})
                )
            elif kind == "exported":
                result.exported = item
                fields["metrics"] = {**fields.get("metrics", {}), **item.get("metrics", {})}
                events.append(("log", {"level": "INFO", "message": "model exported"}))
            elif kind == "fatal":
                result.fatal = str(item.get("message", "fatal error"))[:2000]
                events.append(("log", {"level": "ERROR", "message": result.fatal}))
        if events or fields or phase:
            await self._record(events, phase=phase, **fields)

    async def _sync_loop(self) -> None:
        """Metrics reach the registry run while the job trains, in batches."""
        while True:
            await asyncio.sleep(self._sync_interval)
            try:
                await self._handoff.sync_metrics(self.job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the registry may be away; the next round retries
                log.debug("job %s: metric sync deferred: %s", self.job_id, exc)
