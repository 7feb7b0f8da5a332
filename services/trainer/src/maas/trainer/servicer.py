"""gRPC servicer of maas.v1.TrainerService: translation only."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from maas.trainer import converters as cv
from maas.trainer.service import JobService
from maas.v1 import trainer_pb2 as pb
from maas.v1 import trainer_pb2_grpc


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    async def ListCatalog(self, request: pb.ListCatalogRequest, context: aio.ServicerContext) -> pb.ListCatalogResponse:
        entries = await self._jobs.catalog(request.kind, request.name)
        return pb.ListCatalogResponse(entries=[cv.to_catalog_entry(e) for e in entries])

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: aio.ServicerContext) -> pb.Job:
        return cv.to_job(await self._jobs.submit(cv.from_spec(request.spec), request.idempotency_key))

    async def OptimizeVersion(self, request: pb.OptimizeVersionRequest, context: aio.ServicerContext) -> pb.Job:
        return cv.to_job(await self._jobs.optimize(cv.from_optimize(request.spec), request.idempotency_key))

    async def GetJob(self, request: pb.GetJobRequest, context: aio.ServicerContext) -> pb.Job:
        return cv.to_job(await self._jobs.get(request.job_id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: aio.ServicerContext) -> pb.ListJobsResponse:
        page = await self._jobs.search(
            [cv.from_state(s) for s in request.states], request.page.page_size, request.page.page_token
        )
        return pb.ListJobsResponse(jobs=[cv.to_job(j) for j in page.items], next_page_token=page.next_page_token)

    async def CancelJob(self, request: pb.CancelJobRequest, context: aio.ServicerContext) -> pb.Job:
        return cv.to_job(await self._jobs.cancel(request.job_id))

    async def WatchJob(self, request: pb.WatchJobRequest, context: aio.ServicerContext) -> AsyncIterator[pb.JobEvent]:
        async for event in self._jobs.watch(request.job_id, request.after_seq):
            yield cv.to_event(event)
