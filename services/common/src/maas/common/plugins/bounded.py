"""Running a plugin's code with a time limit, its failures turned into a clear reason.

A plugin's build or load is the operator's code, but it can still raise,
loop or block. It runs in a daemon thread of its own: the caller waits at
most `seconds` and gets FailedPrecondition naming the plugin and what went
wrong. A thread cannot be killed, so one that never returns is abandoned (it
holds no lock of ours and ends with the process); a trainer worker, its own
process, exits after the failure is reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from maas.common.errors import FailedPrecondition, MaasError

T = TypeVar("T")
log = logging.getLogger("maas.plugins")
MAX_DETAIL = 300


def reason(exc: BaseException) -> str:
    """`Type: message` of an exception, short and on one line."""
    text = " ".join(str(exc).split())
    text = text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def within(seconds: float, what: str, fn: Callable[[], T]) -> T:
    """fn()'s result; FailedPrecondition("<what> failed: ...") if it raises, "<what> did not finish ..." if it hangs.

    A MaasError the plugin raises (InvalidArgument naming a field) passes through as it is.
    """
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = fn()
        except BaseException as exc:  # noqa: BLE001 - plugin code: even SystemExit must not end a service
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name=f"plugin {what}"[:60], daemon=True).start()
    if not outcome.done.wait(seconds):
        raise FailedPrecondition(f"{what} did not finish within {seconds:g} s (MAAS_PLUGINS_TIMEOUT_SECONDS)")
    if isinstance(outcome.error, MaasError):
        raise outcome.error
    if outcome.error is not None:
        log.warning("%s failed", what, exc_info=outcome.error)
        raise FailedPrecondition(f"{what} failed: {reason(outcome.error)}") from None
    return outcome.value  # type: ignore[return-value]
