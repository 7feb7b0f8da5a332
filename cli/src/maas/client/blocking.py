"""What the blocking clients share: their async twin, built and driven on the client loop."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Self, TypeVar

from maas.client.config import channel_config
from maas.client.runner import LoopThread, shared
from maas.common.clients.base import AsyncClient, ChannelConfig, RetryPolicy

A = TypeVar("A", bound=AsyncClient)


class BlockingClient(Generic[A]):
    """`Registry`, `Trainer` and `Inference` are this over their `Async*` class.

    A subclass names its service (the key of its address in `Endpoints`) and its
    async class; the async client is made on the loop thread, since a grpc.aio
    channel belongs to the loop it was created on.
    """

    service: ClassVar[str]
    async_class: ClassVar[type[Any]]

    def __init__(
        self,
        config: ChannelConfig | str | None = None,
        *,
        retry: RetryPolicy | None = None,
        runner: LoopThread | None = None,
    ) -> None:
        config = channel_config(self.service, config)
        self._runner = runner or shared()
        self.aio: A = self._runner.run(_make(self.async_class, config, retry))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self.aio.close())


async def _make(cls: type[Any], config: ChannelConfig, retry: RetryPolicy | None) -> Any:
    return cls(config, retry)
