"""gRPC servicer of maas.v1.RegistryService: translation only.

Each method converts the request, calls one domain method, converts the
result. Synchronous domain calls (database work) run on the registry's
executor so the event loop never blocks on SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from grpc import aio

from maas.common import errors
from maas.registry import converters as cv
from maas.registry.domain.aliases import AliasService
from maas.registry.domain.artifacts import ArtifactService, UploadHeader
from maas.registry.domain.deployments import DeploymentService
from maas.registry.domain.events import EventFilter, EventHub
from maas.registry.domain.models import ModelService
from maas.registry.domain.runs import RunService
from maas.registry.domain.versions import VersionService
from maas.v1 import registry_pb2 as pb
from maas.v1 import registry_pb2_grpc

T = TypeVar("T")


@dataclass(frozen=True)
class Domain:
    models: ModelService
    versions: VersionService
    aliases: AliasService
    runs: RunService
    artifacts: ArtifactService
    events: EventHub
    deployments: DeploymentService


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, domain: Domain, executor: Executor) -> None:
        self._d = domain
        self._executor = executor

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---------------------------------------------------------------- models

    async def CreateModel(self, request: pb.CreateModelRequest, context: aio.ServicerContext) -> pb.Model:
        model = await self._call(self._d.models.create, request.name, request.description, dict(request.tags))
        return cv.to_model(model)

    async def GetModel(self, request: pb.GetModelRequest, context: aio.ServicerContext) -> pb.Model:
        return cv.to_model(await self._call(self._d.models.get, request.name))

    async def ListModels(self, request: pb.ListModelsRequest, context: aio.ServicerContext) -> pb.ListModelsResponse:
        page = await self._call(
            self._d.models.search,
            request.name_prefix,
            cv.from_tag_filters(request.tags),
            request.page.page_size,
            request.page.page_token,
        )
        return pb.ListModelsResponse(models=[cv.to_model(m) for m in page.items], next_page_token=page.next_page_token)

    async def UpdateModel(self, request: pb.UpdateModelRequest, context: aio.ServicerContext) -> pb.Model:
        description = request.description if request.HasField("description") else None
        model = await self._call(
            self._d.models.update, request.name, description, dict(request.set_tags), list(request.delete_tags)
        )
        return cv.to_model(model)

    async def DeleteModel(self, request: pb.DeleteModelRequest, context: aio.ServicerContext) -> pb.DeleteModelResponse:
        await self._call(self._d.models.delete, request.name, request.force)
        return pb.DeleteModelResponse()

    # -------------------------------------------------------------- versions

    async def CreateVersion(self, request: pb.CreateVersionRequest, context: aio.ServicerContext) -> pb.ModelVersion:
        return cv.to_version(await self._call(self._d.versions.create, cv.from_create_version(request)))

    async def GetVersion(self, request: pb.GetVersionRequest, context: aio.ServicerContext) -> pb.ModelVersion:
        return cv.to_version(await self._call(self._d.versions.get, request.model, request.version))

    async def ResolveVersion(self, request: pb.ResolveVersionRequest, context: aio.ServicerContext) -> pb.ModelVersion:
        return cv.to_version(await self._call(self._d.versions.resolve, request.ref))

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: aio.ServicerContext
    ) -> pb.ListVersionsResponse:
        page = await self._call(
            lambda: self._d.versions.search(
                request.model,
                statuses=[cv.from_status(s) for s in request.statuses],
                tags=cv.from_tag_filters(request.tags),
                order=cv.from_order(request.order),
                order_metric=request.order_metric,
                include_archived=request.include_archived,
                size=request.page.page_size,
                token=request.page.page_token,
            )
        )
        return pb.ListVersionsResponse(
            versions=[cv.to_version(v) for v in page.items], next_page_token=page.next_page_token
        )

    async def UpdateVersion(self, request: pb.UpdateVersionRequest, context: aio.ServicerContext) -> pb.ModelVersion:
        description = request.description if request.HasField("description") else None
        version = await self._call(
            self._d.versions.update,
            request.model,
            request.version,
            description,
            dict(request.set_tags),
            list(request.delete_tags),
        )
        return cv.to_version(version)

    async def FailVersion(self, request: pb.FailVersionRequest, context: aio.ServicerContext) -> pb.ModelVersion:
        return cv.to_version(await self._call(self._d.versions.fail, request.model, request.version, request.reason))

    async def ArchiveVersion(self, request: pb.ArchiveVersionRequest, context: aio.ServicerContext) -> pb.ModelVersion:
        version = await self._call(self._d.versions.archive, request.model, request.version, request.archived)
        return cv.to_version(version)

    async def DeleteVersion(
        self, request: pb.DeleteVersionRequest, context: aio.ServicerContext
    ) -> pb.DeleteVersionResponse:
        await self._call(self._d.versions.delete, request.model, request.version, request.force)
        return pb.DeleteVersionResponse()

    # --------------------------------------------------------------- aliases

    async def SetAlias(self, request: pb.SetAliasRequest, context: aio.ServicerContext) -> pb.Alias:
        return cv.to_alias(await self._call(self._d.aliases.set, request.model, request.alias, request.version))

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: aio.ServicerContext) -> pb.DeleteAliasResponse:
        await self._call(self._d.aliases.delete, request.model, request.alias)
        return pb.DeleteAliasResponse()

    # ------------------------------------------------------------------ runs

    async def CreateRun(self, request: pb.CreateRunRequest, context: aio.ServicerContext) -> pb.Run:
        return cv.to_run(await self._call(self._d.runs.create, request.name, request.job_id, dict(request.params)))

    async def GetRun(self, request: pb.GetRunRequest, context: aio.ServicerContext) -> pb.Run:
        return cv.to_run(await self._call(self._d.runs.get, request.run_id))

    async def ListRuns(self, request: pb.ListRunsRequest, context: aio.ServicerContext) -> pb.ListRunsResponse:
        page = await self._call(self._d.runs.search, request.job_id, request.page.page_size, request.page.page_token)
        return pb.ListRunsResponse(runs=[cv.to_run(r) for r in page.items], next_page_token=page.next_page_token)

    async def LogParams(self, request: pb.LogParamsRequest, context: aio.ServicerContext) -> pb.LogParamsResponse:
        await self._call(self._d.runs.log_params, request.run_id, dict(request.params))
        return pb.LogParamsResponse()

    async def LogMetrics(self, request: pb.LogMetricsRequest, context: aio.ServicerContext) -> pb.LogMetricsResponse:
        written = await self._call(self._d.runs.log_metrics, request.run_id, cv.from_series(request.series))
        return pb.LogMetricsResponse(points_written=written)

    async def FinishRun(self, request: pb.FinishRunRequest, context: aio.ServicerContext) -> pb.Run:
        run = await self._call(self._d.runs.finish, request.run_id, cv.from_run_status(request.status))
        return cv.to_run(run)

    async def GetMetricHistory(
        self, request: pb.GetMetricHistoryRequest, context: aio.ServicerContext
    ) -> pb.GetMetricHistoryResponse:
        page = await self._call(
            self._d.runs.history,
            request.run_id,
            request.key,
            request.min_step,
            request.max_step,
            request.page.page_size,
            request.page.page_token,
        )
        return pb.GetMetricHistoryResponse(series=cv.to_series(page.items[0]), next_page_token=page.next_page_token)

    # ------------------------------------------------------------- artifacts

    async def UploadArtifact(
        self, request_iterator: AsyncIterator[pb.UploadArtifactRequest], context: aio.ServicerContext
    ) -> pb.ModelVersion:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise errors.InvalidArgument("the first message must be the header")
        h = first.header
        header = UploadHeader(h.model, h.version, h.size_bytes, h.sha256, cv.from_format(h.format, required=False))

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("only chunks may follow the header")
                yield message.chunk

        return cv.to_version(await self._d.artifacts.upload(header, chunks()))

    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        info, chunks = await self._d.artifacts.download(
            request.model, request.version, cv.from_format(request.format, required=False)
        )
        yield pb.DownloadArtifactResponse(info=cv.to_artifact_info(info))
        async for chunk in chunks:
            yield pb.DownloadArtifactResponse(chunk=chunk)

    # ---------------------------------------------------------------- events

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        if request.after_id < 0:
            raise errors.InvalidArgument("after_id: must not be negative")
        filt = EventFilter(
            frozenset(request.models),
            frozenset(cv.from_event_type(t) for t in request.types),
            frozenset(request.deployments),
        )
        async for event in self._d.events.watch(request.after_id, request.from_latest, filt):
            yield cv.to_event(event)

    # ----------------------------------------------------------- deployments

    async def CreateDeployment(
        self, request: pb.CreateDeploymentRequest, context: aio.ServicerContext
    ) -> pb.Deployment:
        spec = cv.from_deployment_spec(request.spec)
        return cv.to_deployment(await self._call(self._d.deployments.create, request.name, spec))

    async def GetDeployment(self, request: pb.GetDeploymentRequest, context: aio.ServicerContext) -> pb.Deployment:
        return cv.to_deployment(await self._call(self._d.deployments.get, request.name))

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: aio.ServicerContext
    ) -> pb.ListDeploymentsResponse:
        page = await self._call(
            self._d.deployments.search, request.name_prefix, request.page.page_size, request.page.page_token
        )
        return pb.ListDeploymentsResponse(
            deployments=[cv.to_deployment(d) for d in page.items], next_page_token=page.next_page_token
        )

    async def UpdateDeployment(
        self, request: pb.UpdateDeploymentRequest, context: aio.ServicerContext
    ) -> pb.Deployment:
        spec = cv.from_deployment_spec(request.spec)
        deployment = await self._call(self._d.deployments.update, request.name, spec, request.expected_generation)
        return cv.to_deployment(deployment)

    async def DeleteDeployment(
        self, request: pb.DeleteDeploymentRequest, context: aio.ServicerContext
    ) -> pb.DeleteDeploymentResponse:
        await self._call(self._d.deployments.delete, request.name, request.expected_generation)
        return pb.DeleteDeploymentResponse()

    async def ReportDeploymentStatus(
        self, request: pb.ReportDeploymentStatusRequest, context: aio.ServicerContext
    ) -> pb.ReportDeploymentStatusResponse:
        status = cv.from_replica_status(request.status)
        generation = await self._call(self._d.deployments.report, request.deployment, status, request.stopped)
        return pb.ReportDeploymentStatusResponse(generation=generation)
