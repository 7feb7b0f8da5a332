"""The error-mapping interceptor's opt-out: methods that map their own errors are left unwrapped."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from maas.common import errors
from maas.common.interceptors import ErrorMappingInterceptor, abort_mapped, maps_own_errors

SERVICE = "test.Mapped"


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


@maps_own_errors
async def mapped_itself(request: bytes, context: aio.ServicerContext) -> bytes:
    try:
        if request == b"missing":
            raise errors.NotFound("no such thing")
        if request == b"bug":
            raise RuntimeError("secret detail")
        return b"ok:" + request
    except Exception as exc:
        await abort_mapped(f"/{SERVICE}/Mapped", exc, context)
        raise


@maps_own_errors
async def mapped_stream(request_iterator: Any, context: aio.ServicerContext) -> None:
    try:
        while (request := await context.read()) is not aio.EOF:
            if request == b"bug":
                raise RuntimeError("secret detail")
            await context.write(b"ok:" + request)
    except Exception as exc:
        await abort_mapped(f"/{SERVICE}/MappedStream", exc, context)


async def left_to_interceptor(request: bytes, context: aio.ServicerContext) -> bytes:
    raise errors.InvalidArgument("bad input")


HANDLERS = {
    "Mapped": grpc.unary_unary_rpc_method_handler(mapped_itself),
    "MappedStream": grpc.stream_stream_rpc_method_handler(mapped_stream),
    "Unmarked": grpc.unary_unary_rpc_method_handler(left_to_interceptor),
}


async def test_marked_methods_are_handed_to_grpc_unwrapped_and_others_wrapped() -> None:
    interceptor = ErrorMappingInterceptor()
    for name, handler in HANDLERS.items():

        async def continuation(details: Any, handler: grpc.RpcMethodHandler = handler) -> grpc.RpcMethodHandler:
            return handler

        got = await interceptor.intercept_service(continuation, Details(f"/{SERVICE}/{name}"))
        assert (got is handler) == (name != "Unmarked"), name


@pytest.fixture
async def server() -> AsyncIterator[str]:
    srv = aio.server(interceptors=[ErrorMappingInterceptor()])
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, HANDLERS)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv.add_insecure_port(f"127.0.0.1:{port}")
    await srv.start()
    yield f"127.0.0.1:{port}"
    await srv.stop(0)


async def test_marked_methods_still_answer_deliberate_statuses(server: str) -> None:
    async with aio.insecure_channel(server) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Mapped")
        assert await call(b"x", timeout=10) == b"ok:x"
        with pytest.raises(aio.AioRpcError) as missing:
            await call(b"missing", timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "no such thing"
        with pytest.raises(aio.AioRpcError) as bug:
            await call(b"bug", timeout=10)
        assert bug.value.code() == grpc.StatusCode.INTERNAL  # never UNKNOWN
        assert "secret" not in (bug.value.details() or "")

        with pytest.raises(aio.AioRpcError) as unmarked:
            await channel.unary_unary(f"/{SERVICE}/Unmarked")(b"x", timeout=10)
        assert unmarked.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        stream = channel.stream_stream(f"/{SERVICE}/MappedStream")(timeout=10)
        await stream.write(b"a")
        assert await stream.read() == b"ok:a"
        await stream.write(b"bug")
        with pytest.raises(aio.AioRpcError) as streamed:
            await stream.read()
        assert streamed.value.code() == grpc.StatusCode.INTERNAL
