"""Typed domain errors.

Domain code raises these and knows nothing of gRPC; `maas.common.status` holds
the one table that maps each class to a status code. Messages are written for
the client: they name the object and the rule, never a path, DSN or trace.
"""

from __future__ import annotations


class MaasError(Exception):
    """Base of every error a client is meant to see."""

    def __init__(self, message: str) -> None:
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
