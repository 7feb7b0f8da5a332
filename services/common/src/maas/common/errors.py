"""Typed domain errors.

Domain code raises these and knows nothing of gRPC; `maas.common.status` holds
the one table that maps each class to a status code. Messages are written for
the client: they name the object and the rule, never a path, DSN or trace.

Every message is bounded here, once, for every service: a status message
travels in the grpc-message trailer (percent-encoded, so up to three bytes per
byte), and one past gRPC's metadata limit (8 KiB soft, 16 KiB hard) reaches
the client as RESOURCE_EXHAUSTED "received metadata size exceeds ..." instead
of the error itself. A message that echoes what a client sent (2,000 unknown
keys, a megabyte-long name) is cut to `MAX_MESSAGE_BYTES` of UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_MESSAGE_BYTES = 1024
_CUT = " ... (cut)"


def bounded(message: str) -> str:
    """`message`, cut to at most MAX_MESSAGE_BYTES of UTF-8 (on a character boundary)."""
    if len(message) * 4 <= MAX_MESSAGE_BYTES:  # fast path: short enough whatever its characters
        return message
    raw = message.encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    return raw[: MAX_MESSAGE_BYTES - len(_CUT)].decode("utf-8", "ignore") + _CUT


def some_of(keys: Iterable[str], shown: int = 5) -> str:
    """A few of `keys` for a message ('a', 'b' and 1998 more): a client may send any number of them."""
    ordered = sorted(keys)
    listed = ", ".join(f"'{key[:40]}'" for key in ordered[:shown])
    return listed + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")


class MaasError(Exception):
    """Base of every error a client is meant to see."""

    def __init__(self, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message


class NotFound(MaasError):
    """The named object does not exist."""


class AlreadyExists(MaasError):
    """An object with that identity exists already."""


class InvalidArgument(MaasError):
    """The request itself is malformed, whatever the system's state."""


class FailedPrecondition(MaasError):
    """The request is well formed but the system is not in a state to do it."""


class ResourceExhausted(MaasError):
    """A size, queue or disk limit was reached."""


class Unavailable(MaasError):
    """A dependency (database, another service) cannot be reached; retry later."""


class DataLoss(MaasError):
    """Stored bytes do not match what was recorded for them."""


class DeadlineExceeded(MaasError):
    """The work did not finish before the caller's deadline."""


class Unauthenticated(MaasError):
    """No valid credentials were presented."""


class PermissionDenied(MaasError):
    """The credentials do not allow this call."""


class Aborted(MaasError):
    """A concurrency conflict that the caller may retry."""


class Internal(MaasError):
    """A server-side failure with no more specific class (clients see this)."""


class Cancelled(MaasError):
    """The call was cancelled."""
