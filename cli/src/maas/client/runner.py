"""A private event loop on a daemon thread: how the blocking clients run the async ones.

Scripts and notebooks (which may already run a loop of their own) call plain
methods; each one submits the async client's coroutine to this loop and waits.
One implementation of every call, whichever style the caller uses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


class LoopThread:
    def __init__(self, name: str = "maas-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def run_cancelling(self, coro: Coroutine[Any, Any, T], cleanup_seconds: float = 10.0) -> T:
        """`run`, except that an exception in the waiting thread (Ctrl-C) cancels the coroutine
        and waits up to `cleanup_seconds` for its own cleanup (a push failing its version) to end."""
        finished = threading.Event()

        async def guarded() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(guarded(), self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                finished.wait(cleanup_seconds)
            raise

    def iterate(self, stream: AsyncIterator[T]) -> Generator[T, None, None]:
        """Drive an async iterator from this thread; closing the generator closes the stream.

        An exception in the waiting thread (Ctrl-C) cancels the pending step first, so the
        stream is never closed while it is still running.
        """

        async def step() -> Any:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                return _DONE

        pending: concurrent.futures.Future[Any] | None = None
        try:
            while True:
                pending = asyncio.run_coroutine_threadsafe(step(), self.loop)
                item = pending.result()
                pending = None
                if item is _DONE:
                    return
                yield item
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                concurrent.futures.wait([pending], timeout=5)
            closer = getattr(stream, "aclose", None)
            if closer is not None and self.loop.is_running():
                with contextlib.suppress(RuntimeError, StopAsyncIteration, asyncio.CancelledError):
                    self.run(_await(closer()))

    def stop(self) -> None:
        if self.loop.is_running():
            # Tasks gRPC left behind (a cancelled call's status watcher, say) are
            # cancelled and awaited, so none is destroyed pending at exit.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_settle(), self.loop).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


async def _settle() -> None:
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=4)
    await asyncio.get_running_loop().shutdown_asyncgens()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


_shared: LoopThread | None = None
_lock = threading.Lock()


def shared() -> LoopThread:
    """The process's one client loop, started on first use."""
    global _shared
    with _lock:
        if _shared is None or _shared.loop.is_closed():
            _shared = LoopThread()
        return _shared
