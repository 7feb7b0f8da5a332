"""Bearer tokens with scopes, checked by one interceptor on every service.

Scopes are ordered: read < replica < write < admin (a write token may read, an
admin token may do anything). `replica` is what an inference replica needs of
the registry: read everything, and report what it serves of each deployment,
without being able to change what anyone serves. Every RPC of every service has a required scope in
`REQUIRED_SCOPE`; a method missing from the table is refused (default deny),
and a test walks the service descriptors to prove the table is complete.
Only grpc.health.v1 is exempt, so orchestrators can probe without a token.

Tokens come from a file (`TOKEN SCOPE` per line) or the environment
(`token:scope,token:scope`). Only their sha256 digests are kept, and a
presented token is compared with every known digest using
hmac.compare_digest, so neither the comparison nor the number of
comparisons depends on how much of a token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from grpc import aio

from maas.common import errors
from maas.common.interceptors import StreamBehavior, UnaryBehavior, WrappingInterceptor
from maas.common.status import status_of

log = logging.getLogger("maas.auth")

SCOPES = ("read", "replica", "write", "admin")
RANK = {name: i for i, name in enumerate(SCOPES)}
MIN_TOKEN_CHARS = 16
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)

_R, _P, _W, _A = "read", "replica", "write", "admin"
REQUIRED_SCOPE: dict[str, str] = {
    # registry
    **{
        f"/maas.v1.RegistryService/{m}": _R
        for m in (
            "GetModel",
            "ListModels",
            "GetVersion",
            "ResolveVersion",
            "ListVersions",
            "GetRun",
            "ListRuns",
            "GetMetricHistory",
            "DownloadArtifact",
            "WatchEvents",
            "GetDeployment",
            "ListDeployments",
        )
    },
    **{
        f"/maas.v1.RegistryService/{m}": _W
        for m in (
            "CreateModel",
            "UpdateModel",
            "CreateVersion",
            "UpdateVersion",
            "FailVersion",
            "ArchiveVersion",
            "SetAlias",
            "DeleteAlias",
            "CreateRun",
            "LogParams",
            "LogMetrics",
            "FinishRun",
            "UploadArtifact",
            # what is served, as moving an alias changes it
            "CreateDeployment",
            "UpdateDeployment",
        )
    },
    # an inference replica says what it serves (its token needs no more than this)
    "/maas.v1.RegistryService/ReportDeploymentStatus": _P,
    "/maas.v1.RegistryService/DeleteModel": _A,
    "/maas.v1.RegistryService/DeleteVersion": _A,
    "/maas.v1.RegistryService/DeleteDeployment": _A,
    # trainer
    "/maas.v1.TrainerService/GetJob": _R,
    "/maas.v1.TrainerService/ListJobs": _R,
    "/maas.v1.TrainerService/WatchJob": _R,
    "/maas.v1.TrainerService/ListCatalog": _R,
    "/maas.v1.TrainerService/SubmitJob": _W,
    "/maas.v1.TrainerService/CancelJob": _W,
    "/maas.v1.TrainerService/OptimizeVersion": _W,
    # inference: serving and reading are "read"; changing what is loaded is "admin"
    **{
        f"/inference.GRPCInferenceService/{m}": _R
        for m in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelStreamInfer",
            "ModelConfig",
            "ModelStatistics",
            "RepositoryIndex",
        )
    },
    "/inference.GRPCInferenceService/RepositoryModelLoad": _A,
    "/inference.GRPCInferenceService/RepositoryModelUnload": _A,
    # server reflection lists the API: readers may see it
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _R,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": _R,
}


class TokenError(ValueError):
    """A token configuration that must not be served."""


def parse_tokens(lines: Iterable[str], source: str) -> dict[str, str]:
    """token -> scope, from `TOKEN SCOPE` or `TOKEN:SCOPE` entries."""
    tokens: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token, _, scope = line.replace(":", " ", 1).partition(" ")
        token, scope = token.strip(), scope.strip()
        if scope not in RANK:
            raise TokenError(f"{source}:{number}: scope must be one of {', '.join(SCOPES)}")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenError(f"{source}:{number}: tokens need at least {MIN_TOKEN_CHARS} characters")
        tokens[token] = scope
    return tokens


def load_tokens(inline: str | None, file: Path | None) -> dict[str, str]:
    tokens: dict[str, str] = {}
    if inline:
        tokens.update(parse_tokens(inline.replace(",", "\n").splitlines(), "auth_tokens"))
    if file is not None:
        tokens.update(parse_tokens(file.read_text().splitlines(), str(file)))
    return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer_token(value: object) -> str | None:
    """The token of an `authorization: Bearer TOKEN` value (gRPC metadata or an HTTP header)."""
    if isinstance(value, str) and value.startswith("Bearer "):
        return value[len("Bearer ") :].strip() or None
    return None


class TokenTable:
    """The configured tokens as digests, for the gRPC interceptor and the HTTP listeners alike.

    `authorize` decides one call by the gRPC method it stands for (the inference
    service's HTTP routes name theirs), so one table of scopes holds for every transport.
    """

    def __init__(self, tokens: dict[str, str], required: dict[str, str] | None = None) -> None:
        self._tokens = [(_digest(t), RANK[s]) for t, s in tokens.items()]
        self._required = REQUIRED_SCOPE if required is None else required

    def rank_of(self, presented: str | None) -> int | None:
        """The rank of the scope of a presented token; None for no token or an unknown one."""
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for known, rank in self._tokens:
            if hmac.compare_digest(digest, known):
                found = rank
        return found

    def authorize(self, method: str, presented: str | None) -> None:
        """Raise Unauthenticated or PermissionDenied unless the presented token may call `method`."""
        if method.startswith(EXEMPT_PREFIXES):
            return
        rank = self.rank_of(presented)
        if rank is None:
            raise errors.Unauthenticated("a valid bearer token is required")
        required = self._required.get(method)
        if required is None:
            raise errors.PermissionDenied("this method is not open to any token")
        if rank < RANK[required]:
            article = "an" if required == "admin" else "a"
            raise errors.PermissionDenied(f"this method needs {article} {required} token")


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, tokens: dict[str, str], required: dict[str, str] | None = None) -> None:
        self.tokens = TokenTable(tokens, required)

    async def _check(self, method: str, context: aio.ServicerContext) -> None:
        if method.startswith(EXEMPT_PREFIXES):
            return
        presented = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = bearer_token(value) or presented
        try:
            self.tokens.authorize(method, presented)
        except errors.MaasError as exc:
            await context.abort(status_of(exc), exc.message)

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: aio.ServicerContext
    ) -> Any:
        await self._check(method, context)
        return await behavior(request, context)

    async def around_stream(  # type: ignore[override]
        self, method: str, behavior: StreamBehavior, request: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await self._check(method, context)
        async for item in behavior(request, context):
            yield item
