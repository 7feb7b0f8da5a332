"""The trainer: submit declarative jobs, list and cancel them, follow their events.

`follow` is WatchJob made dependable: when the stream drops (trainer restart,
network cut) it reconnects from the last sequence number it delivered, so the
caller sees every event exactly once, until the job's final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from typing import Any

from maas.client.blocking import BlockingClient
from maas.client.config import channel_config
from maas.client.specs import job_spec, optimize_spec
from maas.common import errors
from maas.common.clients.base import AsyncClient, ChannelConfig, RetryPolicy
from maas.v1 import common_pb2, trainer_pb2_grpc
from maas.v1 import trainer_pb2 as pb

TERMINAL = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})
JOB_STATES = {pb.JobState.Name(v).removeprefix("JOB_STATE_").lower(): v for v in pb.JobState.values() if v}
# Errors after which a watch is worth resuming: the connection, not the request, failed.
RESUMABLE = (errors.Unavailable, errors.DeadlineExceeded, errors.Internal, errors.Cancelled, errors.Aborted)

RetryCallback = Callable[[errors.MaasError, float], None]


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_") if state in pb.JobState.values() else str(state)


def is_final(event: pb.JobEvent) -> bool:
    return event.WhichOneof("kind") == "state" and event.state.state in TERMINAL


class AsyncTrainer(AsyncClient):
    def __init__(self, config: ChannelConfig | str | None = None, retry: RetryPolicy | None = None) -> None:
        super().__init__(channel_config("trainer", config), retry)
        self.stub = trainer_pb2_grpc.TrainerServiceStub(self.channel)

    async def __aenter__(self) -> AsyncTrainer:
        return self

    async def submit(self, spec: pb.JobSpec | Mapping[str, Any], idempotency_key: str = "") -> pb.Job:
        """Queue a job. With an idempotency key a resubmit is safe, so it is retried like a read."""
        message = spec if isinstance(spec, pb.JobSpec) else job_spec(spec)
        req = pb.SubmitJobRequest(spec=message, idempotency_key=idempotency_key)
        return await self.call(self.stub.SubmitJob, req, idempotent=bool(idempotency_key))

    async def optimize(
        self, source: str | pb.OptimizeSpec | Mapping[str, Any], *, idempotency_key: str = "", **options: Any
    ) -> pb.Job:
        """Queue an optimization job of a READY version (see specs.optimize_spec for the options):
        int8 quantization as a new version, and/or edge formats (ort). Watch it like a training job."""
        req = pb.OptimizeVersionRequest(spec=optimize_spec(source, **options), idempotency_key=idempotency_key)
        return await self.call(self.stub.OptimizeVersion, req, idempotent=bool(idempotency_key))

    async def get(self, job_id: str) -> pb.Job:
        return await self.call(self.stub.GetJob, pb.GetJobRequest(job_id=job_id), idempotent=True)

    async def list_catalog(self, kind: str = "", name: str = "") -> list[pb.CatalogEntry]:
        """The trainer's architectures and data sets ("architecture" or "dataset" for one kind; a name for one entry),
        each with its arguments, inputs and origin; unavailable ones carry the reason."""
        req = pb.ListCatalogRequest(kind=kind, name=name)
        return list((await self.call(self.stub.ListCatalog, req, idempotent=True)).entries)

    async def list_jobs(
        self, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> pb.ListJobsResponse:
        req = pb.ListJobsRequest(
            states=list(states),  # type: ignore[arg-type]
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        return await self.call(self.stub.ListJobs, req, idempotent=True)

    async def iter_jobs(self, states: Iterable[int] = (), page_size: int = 100) -> AsyncIterator[pb.Job]:
        wanted = list(states)
        token = ""
        while True:
            resp = await self.list_jobs(wanted, page_size, token)
            for job in resp.jobs:
                yield job
            token = resp.next_page_token
            if not token:
                return

    async def cancel(self, job_id: str) -> pb.Job:
        # Cancelling twice lands once: the job is CANCELLED (or already final) either way.
        return await self.call(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id), idempotent=True)

    async def watch(self, job_id: str, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """One WatchJob stream, as it is: it may end early if the connection drops."""
        call = self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), metadata=self._metadata)
        async with contextlib.aclosing(self.stream(call)) as events:
            async for event in events:
                yield event

    async def follow(
        self,
        job_id: str,
        after_seq: int = 0,
        *,
        reconnect_timeout: float = 120.0,
        on_retry: RetryCallback | None = None,
    ) -> AsyncIterator[pb.JobEvent]:
        """Every event after `after_seq` until the job's final state, across reconnects.

        Gives up with the last error when no event or connection succeeded for
        `reconnect_timeout` seconds; NotFound and other request errors are raised at once.
        """
        last = after_seq
        attempt = 0
        healthy_since = time.monotonic()
        while True:
            try:
                async for event in self.watch(job_id, last):
                    if event.seq <= last:
                        continue  # the server resent what we have: never deliver twice
                    last = event.seq
                    attempt = 0
                    healthy_since = time.monotonic()
                    yield event
                    if is_final(event):
                        return
                # The stream ended without a final state (the server is shutting down): resume.
                error: errors.MaasError = errors.Unavailable("the event stream ended before the job did")
            except RESUMABLE as exc:
                error = exc
            attempt += 1
            if time.monotonic() - healthy_since > reconnect_timeout:
                raise error
            delay = self.retry.delay(attempt)
            if on_retry is not None:
                on_retry(error, delay)
            await asyncio.sleep(delay)

    async def wait(
        self, job_id: str, after_seq: int = 0, *, within: float | None = None, reconnect_timeout: float = 120.0
    ) -> pb.Job:
        """The job once it is final, or as it is after `within` seconds (None: no limit)."""

        async def final_state() -> None:
            async for _ in self.follow(job_id, after_seq, reconnect_timeout=reconnect_timeout):
                pass

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(final_state(), within)
        return await self.get(job_id)


class Trainer(BlockingClient[AsyncTrainer]):
    """Blocking client of the trainer.

    >>> jobs = Trainer()                 # MAAS_TRAINER_ADDRESS or 127.0.0.1:50052
    >>> job = jobs.submit({"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 5})
    >>> for event in jobs.follow(job.job_id): print(event)
    """

    service = "trainer"
    async_class = AsyncTrainer

    def submit(self, spec: pb.JobSpec | Mapping[str, Any], idempotency_key: str = "") -> pb.Job:
        return self._runner.run(self.aio.submit(spec, idempotency_key))

    def optimize(
        self, source: str | pb.OptimizeSpec | Mapping[str, Any], *, idempotency_key: str = "", **options: Any
    ) -> pb.Job:
        """Queue an optimization job, e.g. `optimize("digits/1", quantize="int8", formats=["ort"])`."""
        return self._runner.run(self.aio.optimize(source, idempotency_key=idempotency_key, **options))

    def get(self, job_id: str) -> pb.Job:
        return self._runner.run(self.aio.get(job_id))

    def list_catalog(self, kind: str = "", name: str = "") -> list[pb.CatalogEntry]:
        """e.g. `[e.name for e in list_catalog("architecture") if not e.origin.builtin]`: the plugins' networks."""
        return self._runner.run(self.aio.list_catalog(kind, name))

    def jobs(self, states: Iterable[int] = ()) -> Generator[pb.Job, None, None]:
        return self._runner.iterate(self.aio.iter_jobs(states))

    def cancel(self, job_id: str) -> pb.Job:
        return self._runner.run(self.aio.cancel(job_id))

    def follow(
        self,
        job_id: str,
        after_seq: int = 0,
        *,
        reconnect_timeout: float = 120.0,
        on_retry: RetryCallback | None = None,
    ) -> Generator[pb.JobEvent, None, None]:
        stream = self.aio.follow(job_id, after_seq, reconnect_timeout=reconnect_timeout, on_retry=on_retry)
        return self._runner.iterate(stream)

    def wait(
        self, job_id: str, after_seq: int = 0, *, within: float | None = None, reconnect_timeout: float = 120.0
    ) -> pb.Job:
        """Block until the job is final (or `within` seconds have passed); returns it as it is then."""
        return self._runner.run(self.aio.wait(job_id, after_seq, within=within, reconnect_timeout=reconnect_timeout))
