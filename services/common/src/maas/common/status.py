"""The tables from domain errors to status codes: gRPC's, and HTTP's for the HTTP faces.

The HTTP codes follow the mapping google.rpc.Code documents for each gRPC code.
"""

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


HTTP_STATUS_OF: dict[type[errors.MaasError], int] = {
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 400,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
    errors.DataLoss: 500,
    errors.DeadlineExceeded: 504,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.Aborted: 409,
    errors.Internal: 500,
    errors.Cancelled: 499,
}


def http_status_of(exc: errors.MaasError) -> int:
    for cls in type(exc).__mro__:
        code = HTTP_STATUS_OF.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return 500
