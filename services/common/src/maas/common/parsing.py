"""A request that does not parse is INVALID_ARGUMENT, on every method of every service.

gRPC deserializes a request before any interceptor or handler code runs. A
DecodeError there (bytes that are not the message, or a message nested past
protobuf's recursion limit: 100 messages, which a `google.protobuf.Struct`
reaches at about 33 levels, each level being a Struct, a map entry and a Value)
goes to grpc.aio itself, which logs a traceback and answers UNKNOWN.
`ParseGuardInterceptor`, innermost in the chain, gives each handler a
deserializer that never lets a DecodeError reach gRPC:

- a single request (read by gRPC before the handler runs) becomes an `Unparsed`
  stand-in: the error-mapping interceptor refuses it before calling the handler,
  and a handler that maps its own errors (`maps_own_errors`) meets the error on
  its first look at the request, since every attribute of it raises;
- a message of a request stream (read by the handler, from its iterator or
  `context.read()`) raises InvalidArgument where it is read, and the handler's
  error mapping, the interceptor's or its own, turns that into the status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from maas.common import errors

# protobuf's default recursion limit (upb and the C++ runtime alike).
RECURSION_LIMIT = 100

Deserializer = Callable[[bytes], Any]


def refusal(exc: DecodeError) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        f"request does not parse ({exc}): malformed, or nested more than {RECURSION_LIMIT} messages deep "
        "(about 33 levels of objects or lists in a Struct)"
    )


class Unparsed:
    """Stands in for a single request that did not parse; any attribute of it raises InvalidArgument."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def refuse(self) -> NoReturn:
        raise errors.InvalidArgument(self.message)

    def __getattr__(self, name: str) -> NoReturn:
        self.refuse()


def single(deserializer: Deserializer) -> Deserializer:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Unparsed(refusal(exc).message)

    return deserialize


def streamed(deserializer: Deserializer) -> Deserializer:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            raise refusal(exc) from None

    return deserialize


class ParseGuardInterceptor(aio.ServerInterceptor):
    """Swaps each handler's request deserializer for a guarded one; its behaviour is left as it is."""

    def __init__(self) -> None:
        # grpc asks the chain for a handler on every call: build each method's once.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        hit = self._guarded.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        guarded = _with_deserializer(handler)
        self._guarded[method] = (handler, guarded)
        return guarded


def _with_deserializer(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary, single(deserializer), serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(handler.unary_stream, single(deserializer), serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(handler.stream_unary, streamed(deserializer), serializer)
    return grpc.stream_stream_rpc_method_handler(handler.stream_stream, streamed(deserializer), serializer)
