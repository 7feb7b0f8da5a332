"""The one retry loop (maas.common.retry) and the one file digest (maas.common.digest), on a fake clock."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from maas.common.digest import sha256_file
from maas.common.retry import RetryPolicy


class Transient(Exception):
    pass


class Refused(Exception):
    pass


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep_sync(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleep_sync(seconds)


def failing(times: int, error: Callable[[], Exception] = Transient) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error()
        return "done"

    return fn, calls


def transient(exc: Exception) -> bool:
    return isinstance(exc, Transient)


async def test_retries_until_success_then_returns_the_result() -> None:
    fake = FakeTime()
    fn, calls = failing(3)

    async def call() -> str:
        return fn()

    result = await RetryPolicy(attempts=5).run(call, retryable=transient, clock=fake.clock, sleep=fake.sleep)
    assert result == "done" and len(calls) == 4 and len(fake.pauses) == 3


def test_gives_up_after_the_attempt_count_with_the_last_error() -> None:
    fake = FakeTime()
    fn, calls = failing(10)
    with pytest.raises(Transient):
        RetryPolicy(attempts=3).run_sync(fn, retryable=transient, clock=fake.clock, sleep=fake.sleep_sync)
    assert len(calls) == 3 and len(fake.pauses) == 2


def test_an_error_the_predicate_refuses_is_raised_at_once() -> None:
    fake = FakeTime()
    fn, calls = failing(10, Refused)
    with pytest.raises(Refused):
        RetryPolicy(attempts=5).run_sync(fn, retryable=transient, clock=fake.clock, sleep=fake.sleep_sync)
    assert len(calls) == 1 and fake.pauses == []


async def test_no_attempt_starts_past_the_deadline_even_without_an_attempt_limit() -> None:
    fake = FakeTime()
    fn, calls = failing(10_000)

    async def call() -> str:
        return fn()

    policy = RetryPolicy(attempts=None, initial_backoff=0.1, max_backoff=1.0, deadline=5.0)
    with pytest.raises(Transient):
        await policy.run(call, retryable=transient, clock=fake.clock, sleep=fake.sleep)
    assert sum(fake.pauses) < 5.0
    assert len(calls) == len(fake.pauses) + 1 > 5  # it did retry, several times, within the deadline


def test_backoff_doubles_to_its_cap_and_jitter_only_shortens_it() -> None:
    random.seed(7)
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, jitter=0.5)
    for attempt in range(1, 12):
        ceiling = min(1.0, 0.1 * 2 ** (attempt - 1))
        pauses = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling * 0.5 <= p <= ceiling for p in pauses), attempt
        assert max(pauses) - min(pauses) > ceiling * 0.3  # jittered, not constant
    assert RetryPolicy(initial_backoff=0.1, jitter=0.0).delay(3) == pytest.approx(0.4)


def test_on_retry_hears_each_failed_attempt_and_its_pause() -> None:
    fake = FakeTime()
    fn, _ = failing(2)
    heard: list[tuple[int, float]] = []
    RetryPolicy(attempts=5).run_sync(
        fn,
        retryable=transient,
        on_retry=lambda exc, attempt, pause: heard.append((attempt, pause)),
        clock=fake.clock,
        sleep=fake.sleep_sync,
    )
    assert [a for a, _ in heard] == [1, 2] and [p for _, p in heard] == fake.pauses


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


def test_sha256_file_is_the_digest_of_the_bytes(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
