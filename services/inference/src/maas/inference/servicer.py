"""inference.GRPCInferenceService: converts each request, calls the data plane, converts back.

Domain errors propagate to the error-mapping interceptor (one table to status
codes). In ModelStreamInfer a failed request is answered in-stream with its
error_message and the stream goes on; requests of one stream run concurrently
(up to STREAM_WINDOW at once, each a callback on its queued work rather than a
task) and are answered as they finish, carrying their request id.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from maas.common import errors
from maas.inference import converters
from maas.inference.converters import InferResult
from maas.inference.dataplane import EXTENSIONS, SERVER_NAME, SERVER_VERSION, DataPlane
from maas.oip import grpc_service_pb2 as pb
from maas.oip import grpc_service_pb2_grpc as pb_grpc

STREAM_WINDOW = 256


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return converters.to_model_metadata(self.plane.model(request.name, request.version))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: aio.ServicerContext) -> pb.ModelConfigResponse:
        return converters.to_model_config(self.plane.model(request.name, request.version))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        result = await self.plane.infer(request, context.time_remaining())
        return converters.to_infer_response(result)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Future[Any]] = set()
        room = asyncio.Event()

        def answer(request: pb.ModelInferRequest, result: InferResult | BaseException) -> None:
            if isinstance(result, InferResult):
                answers.put_nowait(converters.to_stream_response(result))
            elif isinstance(result, errors.MaasError):
                answers.put_nowait(converters.to_stream_error(request, result.message))
            else:  # one request's failure must not end the stream
                answers.put_nowait(converters.to_stream_error(request, "internal error"))

        def settled(work: asyncio.Future[Any]) -> None:
            pending.discard(work)
            room.set()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    while len(pending) >= STREAM_WINDOW:
                        room.clear()
                        await room.wait()
                    work = self.plane.infer_soon(request, functools.partial(answer, request))
                    if not work.done():
                        pending.add(work)
                        work.add_done_callback(settled)
                while pending:
                    room.clear()
                    await room.wait()
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
            await reader
        finally:
            reader.cancel()
            for work in list(pending):
                work.cancel()

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        version = converters.from_version_field(request.version)
        return converters.to_statistics(self.plane.statistics_of(request.name, version))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return converters.to_index(await self.plane.index(request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        target, options = converters.from_load_request(request)
        await self.plane.load(request.model_name, target, options)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
