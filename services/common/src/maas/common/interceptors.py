"""Server interceptors: error mapping, access log and Prometheus metrics.

Each is a small class on one base that wraps the four handler shapes, so a
concern is written once for unary and streaming calls alike. They are switched
on by settings in `maas.common.server`; the error mapping is always on and sits
innermost, so the outer ones observe the final status code.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram

from maas.common import errors
from maas.common.parsing import Unparsed
from maas.common.status import status_of

log = logging.getLogger("maas.grpc")
access_log = logging.getLogger("maas.access")

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext], AsyncIterator[Any]]


class WrappingInterceptor(aio.ServerInterceptor):
    """Base: subclasses implement `around_unary` and `around_stream`."""

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        return await behavior(request, context)

    def around_stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        return behavior(request, context)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # grpc asks the chain for a handler on every call; the wrapped handler of a
        # method is built once and reused while the inner handler is the same object.
        method = handler_call_details.method
        cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = self.__dict__.setdefault("_wrapped", {})
        hit = cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(method, handler)
        cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def call(request: Any, context: aio.ServicerContext) -> Any:
            return await self.around_unary(method, behavior, request, context)

        return call

    def _stream(self, method: str, behavior: Callable[..., Any]) -> StreamBehavior:
        as_generator = _as_async_generator(behavior)

        async def call(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in self.around_stream(method, as_generator, request, context):
                yield item

        return call


def _as_async_generator(behavior: Callable[..., Any]) -> StreamBehavior:
    """Streaming servicers may also be coroutines that call context.write()."""
    if inspect.isasyncgenfunction(behavior):
        return behavior

    async def gen(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        result = await behavior(request, context)
        if result is not None:
            async for item in result:
                yield item

    return gen


MAPS_OWN_ERRORS = "__maas_maps_own_errors__"

_F = TypeVar("_F", bound=Callable[..., Any])


def maps_own_errors(behavior: _F) -> _F:
    """Mark a servicer method that turns every exception into a status itself (see `abort_mapped`).

    The error-mapping interceptor hands such a method to gRPC unwrapped: no
    wrapper coroutine or generator per call or streamed message on a hot path.
    The method must still never let an exception out (gRPC would answer UNKNOWN),
    and must read its request inside its own mapping: a request that did not parse
    raises InvalidArgument there (`maas.common.parsing`).
    """
    setattr(behavior, MAPS_OWN_ERRORS, True)
    return behavior


def _maps_own_errors(handler: grpc.RpcMethodHandler) -> bool:
    behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    return bool(getattr(behavior, MAPS_OWN_ERRORS, False))


class ErrorMappingInterceptor(WrappingInterceptor):
    """Turns every exception into a deliberate status: never UNKNOWN.

    Domain errors map through the status table. Anything else is INTERNAL with
    a short reference id; the details go to the log, not to the client.
    Methods marked with `maps_own_errors` do this themselves and are left unwrapped.
    """

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if _maps_own_errors(handler):
            return handler
        return super()._wrap(method, handler)

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        try:
            if request.__class__ is Unparsed:  # see maas.common.parsing
                request.refuse()
            return await behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - this is the one place that catches all
            await _abort(method, exc, context)

    async def around_stream(  # type: ignore[override]
        self, method: str, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            if request.__class__ is Unparsed:
                request.refuse()
            async for item in behavior(request, context):
                yield item
        except Exception as exc:  # noqa: BLE001
            await _abort(method, exc, context)


async def abort_mapped(method: str, exc: Exception, context: aio.ServicerContext) -> None:
    """Abort the call with `exc`'s status, as the error-mapping interceptor would (always raises)."""
    await _abort(method, exc, context)


async def _abort(method: str, exc: Exception, context: aio.ServicerContext) -> None:
    if isinstance(exc, aio.AbortError):
        raise exc
    if isinstance(exc, errors.MaasError):
        await context.abort(status_of(exc), exc.message)
    ref = uuid.uuid4().hex[:12]
    log.error("internal error in %s (ref %s)", method, ref, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref})")


def _code_of(context: aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    if exc is not None and not isinstance(exc, aio.AbortError):
        import asyncio

        if isinstance(exc, asyncio.CancelledError):
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.INTERNAL
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:  # some versions hand back the int value
        if candidate.value[0] == code:
            return candidate
    return grpc.StatusCode.INTERNAL


class ObservingInterceptor(WrappingInterceptor):
    """Base for interceptors that only watch each call's method, code and time."""

    def observe(self, method: str, code: grpc.StatusCode, seconds: float, context: aio.ServicerContext) -> None:
        raise NotImplementedError

    def started(self, method: str) -> None:
        """Hook for a call that has just begun."""

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        self.started(method)
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self.observe(method, _code_of(context, failure), time.perf_counter() - start, context)

    async def around_stream(  # type: ignore[override]
        self, method: str, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        self.started(method)
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            async for item in behavior(request, context):
                yield item
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self.observe(method, _code_of(context, failure), time.perf_counter() - start, context)


class AccessLogInterceptor(ObservingInterceptor):
    """One log line per call: method, status, duration, peer."""

    def observe(self, method: str, code: grpc.StatusCode, seconds: float, context: aio.ServicerContext) -> None:
        access_log.info("%s %s %.2fms %s", method, code.name, seconds * 1000.0, context.peer())


def _split(method: str) -> tuple[str, str]:
    _, _, rest = method.partition("/")
    service, _, name = rest.partition("/")
    return service, name


class _MethodMetrics:
    """One method's labelled series, looked up once (labels() costs a lock and a tuple per call)."""

    __slots__ = ("handled", "labels", "seconds", "started")

    def __init__(self, interceptor: MetricsInterceptor, method: str) -> None:
        self.labels = _split(method)
        self.started = interceptor._started.labels(*self.labels)
        self.seconds = interceptor._seconds.labels(*self.labels)
        self.handled: dict[grpc.StatusCode, Any] = {}


class MetricsInterceptor(ObservingInterceptor):
    """Per-method call counts and latency, with the labels go-grpc-prometheus uses."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_service", "grpc_method"]
        self._started = Counter("grpc_server_started_total", "RPCs started on the server.", labels, registry=registry)
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status.",
            labels,
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._methods: dict[str, _MethodMetrics] = {}

    def _of(self, method: str) -> _MethodMetrics:
        found = self._methods.get(method)
        if found is None:
            found = self._methods[method] = _MethodMetrics(self, method)
        return found

    def started(self, method: str) -> None:
        self._of(method).started.inc()

    def observe(self, method: str, code: grpc.StatusCode, seconds: float, context: aio.ServicerContext) -> None:
        series = self._of(method)
        handled = series.handled.get(code)
        if handled is None:
            handled = series.handled[code] = self._handled.labels(*series.labels, code.name)
        handled.inc()
        series.seconds.observe(seconds)
