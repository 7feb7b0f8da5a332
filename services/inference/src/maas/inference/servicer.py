"""inference.GRPCInferenceService: converts each request, calls the data plane, converts back.

Domain errors of most methods propagate to the error-mapping interceptor (one
table to status codes). The two inference methods, the hot path, map their
own errors through the same table (`maps_own_errors`, `abort_mapped`): no
wrapper coroutine per call or generator layer per streamed message.

ModelInfer runs one request through the data plane's `infer` (as the HTTP
infer route does): submit, await its batch, answer.
ModelStreamInfer uses gRPC's reader/writer API: one reader task reads and
submits requests as they come (up to STREAM_WINDOW at once), each finished
request's answer is queued by a callback on its work, and the handler writes
answers in completion order, each carrying its request id. A failed request
is answered in-stream with its error_message and the stream goes on. A
request for a model the memory limit evicted waits for its load in a task of
its own (in the window), and the stream's other requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from maas.common import errors
from maas.common.interceptors import abort_mapped, maps_own_errors
from maas.inference import converters
from maas.inference.batcher import Outcome
from maas.inference.dataplane import EXTENSIONS, SERVER_NAME, SERVER_VERSION, DataPlane, record_failure
from maas.inference.domain import InferRequest
from maas.inference.manager import NotLoaded
from maas.inference.served import ServedVersion
from maas.inference.validation import ParsedRequest
from maas.oip import grpc_service_pb2 as pb
from maas.oip import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("maas.inference.servicer")

STREAM_WINDOW = 256
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
EOF_ = aio.EOF


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

    @maps_own_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        try:
            result = await self.plane.infer(converters.from_infer_request(request), context.time_remaining())
            return converters.to_infer_response(result)
        except Exception as exc:
            await abort_mapped(MODEL_INFER, exc, context)
            raise  # not reached: abort_mapped raises

    @maps_own_errors
    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: aio.ServicerContext
    ) -> None:
        stream = _Stream(self.plane, context)
        try:
            await stream.run()
        except Exception as exc:  # noqa: BLE001 - mapped to a deliberate status, never UNKNOWN
            await abort_mapped(MODEL_STREAM_INFER, exc, context)

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


class _Stream:
    """One ModelStreamInfer call: a reader task submitting requests, and the writer (the handler itself)."""

    __slots__ = ("answers", "context", "loop", "pending", "plane", "reading", "room", "wake")

    def __init__(self, plane: DataPlane, context: aio.ServicerContext) -> None:
        self.plane = plane
        self.context = context
        self.loop = asyncio.get_running_loop()
        self.answers: deque[pb.ModelStreamInferResponse] = deque()
        self.pending: set[asyncio.Future[Any]] = set()  # requests' work, and loads of evicted models they wait for
        self.reading = True
        self.wake: asyncio.Future[None] | None = None  # set while the writer waits for an answer
        self.room: asyncio.Future[None] | None = None  # set while the reader waits for the window

    async def run(self) -> None:
        reader = self.loop.create_task(self._read())
        reader.add_done_callback(self._read_ended)
        answers = self.answers
        write = self.context.write
        try:
            while True:
                while answers:
                    await write(answers.popleft())
                if not self.reading and not self.pending:
                    break
                self.wake = self.loop.create_future()
                await self.wake
            await reader  # its error, if it failed
        finally:
            reader.cancel()
            for future in self.pending:  # the client went away: drop what is still queued
                future.cancel()

    async def _read(self) -> None:
        read = self.context.read
        while (request := await read()) is not EOF_:
            if len(self.pending) >= STREAM_WINDOW:
                self.room = self.loop.create_future()
                await self.room
            self._submit(request)

    def _submit(self, message: pb.ModelInferRequest) -> None:
        request = converters.from_infer_request(message)
        try:
            served, parsed, future, start = self.plane.submit(request, None)
        except NotLoaded:
            self.pending.add(self.loop.create_task(self._submit_cold(request)))
            return
        except Exception as exc:  # noqa: BLE001 - answered in-stream; the stream goes on
            self._answer(_stream_error(request, exc))
            return
        self.pending.add(future)
        future.add_done_callback(_Finish(self, request, served, parsed, start))

    async def _submit_cold(self, request: InferRequest) -> None:
        """Wait for an evicted model's load, then queue the request (its slot in the window passes to its work)."""
        task = asyncio.current_task()
        try:
            served, parsed, future, start = await self.plane.submit_cold(request, None)
        except Exception as exc:  # noqa: BLE001 - answered in-stream; the stream goes on
            self._done(task)
            self._answer(_stream_error(request, exc))
            return
        self.pending.add(future)
        future.add_done_callback(_Finish(self, request, served, parsed, start))
        self.pending.discard(task)  # type: ignore[arg-type]

    def _done(self, work: asyncio.Future[Any] | None) -> None:
        """`work` leaves the window: the reader may read on."""
        self.pending.discard(work)  # type: ignore[arg-type]
        room = self.room
        if room is not None:
            self.room = None
            if not room.done():
                room.set_result(None)

    def _answer(self, answer: pb.ModelStreamInferResponse) -> None:
        self.answers.append(answer)
        wake = self.wake
        if wake is not None:
            self.wake = None
            if not wake.done():
                wake.set_result(None)

    def _read_ended(self, _reader: asyncio.Task[None]) -> None:
        self.reading = False
        wake = self.wake
        if wake is not None:
            self.wake = None
            if not wake.done():
                wake.set_result(None)


class _Finish:
    """The done callback of one streamed request's work: account, then queue its answer."""

    __slots__ = ("parsed", "request", "served", "start", "stream")

    def __init__(
        self, stream: _Stream, request: InferRequest, served: ServedVersion, parsed: ParsedRequest, start: int
    ) -> None:
        self.stream = stream
        self.request = request
        self.served = served
        self.parsed = parsed
        self.start = start

    def __call__(self, future: asyncio.Future[Outcome]) -> None:
        stream = self.stream
        served = self.served
        served.release()
        stream._done(future)
        if future.cancelled():
            record_failure(served, self.start, asyncio.CancelledError())
            return
        failure = future.exception()
        if failure is not None:
            record_failure(served, self.start, failure)
            stream._answer(_stream_error(self.request, failure))
            return
        try:
            result = stream.plane.succeeded(served, self.parsed, future.result(), self.start, self.request)
            answer = converters.to_stream_response(result)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not end the stream
            answer = _stream_error(self.request, exc)
        stream._answer(answer)


def _stream_error(request: InferRequest, exc: BaseException) -> pb.ModelStreamInferResponse:
    if isinstance(exc, errors.MaasError):
        return converters.to_stream_error(request, exc.message)
    log.error("internal error in a streamed request", exc_info=exc)
    return converters.to_stream_error(request, "internal error")
