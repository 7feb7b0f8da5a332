"""The one table from domain errors to gRPC status codes."""

from __future__ import annotations

import grpc

from maas.common import errors

STATUS_OF: dict[type[errors.MaasError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}

# The reverse, for clients that turn a status back into a domain error.
ERROR_OF: dict[grpc.StatusCode, type[errors.MaasError]] = {v: k for k, v in STATUS_OF.items()}


def status_of(exc: errors.MaasError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = STATUS_OF.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def error_of(code: grpc.StatusCode, details: str) -> errors.MaasError:
    """A client-side domain error for a status (UNKNOWN and others become Internal)."""
    return ERROR_OF.get(code, errors.Internal)(details or code.name)
