"""One retry loop: capped exponential backoff with jitter, a retryable predicate, a deadline.

Used by the clients (idempotent calls through UNAVAILABLE), the trainer's
hand-off (registry outages waited out) and the session boundary (transient
database conflicts, synchronously). Each caller says what is retryable and
turns the final error into its own; the loop only decides whether and when to
try again. Jitter spreads the retries of many callers that failed together.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

Retryable = Callable[[Exception], bool]
# Told of each retry: the error, the attempt that failed (1-based) and the pause before the next.
OnRetry = Callable[[Exception, int, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries (None: no limit), none started after `deadline` seconds.

    The pause after attempt n is min(max_backoff, initial_backoff * multiplier**(n-1)),
    shortened by a random fraction of up to `jitter`.
    """

    attempts: int | None = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt `attempt` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return ceiling * (1.0 - self.jitter * random.random())

    def _pause(self, exc: Exception, attempt: int, started: float, now: float, retryable: Retryable) -> float | None:
        """The pause before another attempt, or None to give up with `exc`."""
        if (self.attempts is not None and attempt >= self.attempts) or not retryable(exc):
            return None
        pause = self.delay(attempt)
        if self.deadline is not None and now + pause - started >= self.deadline:
            return None
        return pause

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retryable: Retryable,
        on_retry: OnRetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> T:
        """`fn()` until it succeeds; a non-retryable error, or the last one, is raised as it is."""
        started = clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except Exception as exc:
                pause = self._pause(exc, attempt, started, clock(), retryable)
                if pause is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, pause)
            await sleep(pause)

    def run_sync(
        self,
        fn: Callable[[], T],
        *,
        retryable: Retryable,
        on_retry: OnRetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> T:
        """`run` for blocking code (a database transaction on a worker thread)."""
        started = clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                pause = self._pause(exc, attempt, started, clock(), retryable)
                if pause is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, pause)
            sleep(pause)
