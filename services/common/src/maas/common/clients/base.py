"""What every typed client shares: channels, deadlines, retries, error mapping.

Every call carries a deadline. Only calls marked idempotent are retried, on
UNAVAILABLE or a per-attempt DEADLINE_EXCEEDED, with capped exponential
backoff and jitter; a create is never sent twice.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from maas.common import errors
from maas.common.keepalive import KEEPALIVE, Keepalive
from maas.common.retry import RetryPolicy as RetryPolicy  # the clients' policy, re-exported
from maas.common.status import error_of

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def retryable(exc: Exception) -> bool:
    return isinstance(exc, aio.AioRpcError) and exc.code() in RETRYABLE


def never(exc: Exception) -> bool:
    return False


@dataclass(frozen=True)
class ChannelConfig:
    """How to reach a service: address, deadline, transport security, token."""

    target: str
    timeout: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    tls: bool = False
    token: str | None = field(default=None, repr=False)
    keepalive: Keepalive = KEEPALIVE

    def open(self) -> aio.Channel:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            *self.keepalive.client_options(),
        ]
        if self.tls or self.root_certificates is not None:
            creds = grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)
            if self.token:
                creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
            return aio.secure_channel(self.target, creds, options=options)
        return aio.insecure_channel(self.target, options=options)

    def metadata(self) -> Sequence[tuple[str, str]]:
        # Without TLS, grpc refuses call credentials; the token travels as plain metadata.
        if self.token and not (self.tls or self.root_certificates is not None):
            return (("authorization", f"Bearer {self.token}"),)
        return ()


def to_error(exc: grpc.RpcError) -> errors.MaasError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_of(code, details or "")


class AsyncClient:
    """Base of the typed async clients."""

    def __init__(self, config: ChannelConfig, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self.channel = config.open()
        self._metadata = config.metadata()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: Any, request: Any, *, idempotent: bool, timeout: float | None = None) -> Any:
        deadline = timeout or self.config.timeout
        try:
            return await self.retry.run(
                lambda: method(request, timeout=deadline, metadata=self._metadata),
                retryable=retryable if idempotent else never,
            )
        except aio.AioRpcError as exc:
            raise to_error(exc) from None

    async def stream(self, call: Any) -> AsyncGenerator[Any, None]:
        """The messages of a server-streaming call, errors as MaasError; the call is cancelled when the caller stops."""
        try:
            async for message in call:
                yield message
        except Exception as exc:
            if hasattr(exc, "code") and callable(exc.code):
                raise to_error(exc) from None  # type: ignore[arg-type]
            raise
        finally:
            call.cancel()
