"""The Open Inference Protocol's HTTP/REST binding (KServe V2) as an ASGI application.

Each route stands for the gRPC method of the same meaning: it takes that method's
token scope (one table, `maas.common.auth`; only the two health routes are open, as
grpc.health.v1 is, for probes), converts the body (`http_converters`),
calls the same data plane the gRPC servicer calls, and converts back. Errors are the
protocol's error body, `{"error": "..."}`, with the HTTP code of the domain error
(`maas.common.status`); a body over the message size limit is 413; anything
unexpected is 500 with a reference into the log, never a trace.

Routes (Triton's paths; a version is optional wherever a model is named):
`GET /v2/health/live|ready`, `GET /v2`, `GET /v2/models/{m}[/versions/{v}]`,
`.../ready`, `.../config`, `.../stats`, `GET /v2/models/stats`, `POST .../infer`,
`POST /v2/repository/index`, `POST /v2/repository/models/{m}/load|unload`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from maas.common import errors
from maas.common.auth import TokenTable, bearer_token
from maas.common.status import http_status_of
from maas.inference import http_converters as hc
from maas.inference.dataplane import EXTENSIONS, SERVER_NAME, SERVER_VERSION, DataPlane

log = logging.getLogger("maas.inference.http")

GRPC_SERVICE = "/inference.GRPCInferenceService/"
# What the HTTP face implements beyond the gRPC service's extensions.
HTTP_EXTENSIONS = (*EXTENSIONS, "binary_tensor_data")
BINARY = "application/octet-stream"

Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """A refusal that only HTTP has a code for (413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class OipHttp:
    """The routes over one data plane, with the process's tokens and body limit."""

    def __init__(self, plane: DataPlane, tokens: TokenTable | None, max_body_bytes: int) -> None:
        self.plane = plane
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes

    def app(self) -> Starlette:
        model = "/v2/models/{model}"
        version = "/v2/models/{model}/versions/{version}"
        routes = [
            # Open without a token, as grpc.health.v1 is: what orchestrators and balancers probe.
            self._route("GET", "/v2/health/live", "ServerLive", self.live, open_=True),
            self._route("GET", "/v2/health/ready", "ServerReady", self.ready, open_=True),
            self._route("GET", "/v2", "ServerMetadata", self.server_metadata),
            self._route("GET", "/v2/models/stats", "ModelStatistics", self.statistics),
            self._route("POST", "/v2/repository/index", "RepositoryIndex", self.index),
            self._route("POST", "/v2/repository/models/{model}/load", "RepositoryModelLoad", self.load),
            self._route("POST", "/v2/repository/models/{model}/unload", "RepositoryModelUnload", self.unload),
        ]
        for prefix in (model, version):
            routes += [
                self._route("GET", prefix, "ModelMetadata", self.model_metadata),
                self._route("GET", f"{prefix}/ready", "ModelReady", self.model_ready),
                self._route("GET", f"{prefix}/config", "ModelConfig", self.model_config),
                self._route("GET", f"{prefix}/stats", "ModelStatistics", self.statistics),
                self._route("POST", f"{prefix}/infer", "ModelInfer", self.infer),
            ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _starlette_error})

    def _route(self, http_method: str, path: str, method: str, handler: Handler, *, open_: bool = False) -> Route:
        full = GRPC_SERVICE + method
        tokens = None if open_ else self.tokens

        async def endpoint(request: Request) -> Response:
            try:
                if tokens is not None:
                    tokens.authorize(full, bearer_token(request.headers.get("authorization")))
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a deliberate status
                return error_response(full, exc)

        return Route(path, endpoint, methods=[http_method], name=f"{method}:{path}")

    # ----------------------------------------------------------------- routes

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.plane.ready else 400)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(hc.to_server_metadata(SERVER_NAME, SERVER_VERSION, HTTP_EXTENSIONS))

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model(request)
        return JSONResponse(hc.to_model_metadata(self.plane.model(name, version)))

    async def model_ready(self, request: Request) -> Response:
        name, version = _model(request)
        return Response(status_code=200 if self.plane.model_ready(name, version) else 400)

    async def model_config(self, request: Request) -> Response:
        name, version = _model(request)
        return JSONResponse(hc.to_model_config(self.plane.model(name, version)))

    async def statistics(self, request: Request) -> Response:
        name, version = _model(request)
        return JSONResponse(hc.to_statistics(self.plane.statistics_of(name, hc.from_version_path(version))))

    async def infer(self, request: Request) -> Response:
        name, version = _model(request)
        body = await self._body(request)
        infer, encoding, timeout = hc.from_infer_request(name, version, body, request.headers.get(hc.HEADER_LENGTH))
        content, header_length = hc.to_infer_response(await self.plane.infer(infer, timeout), encoding)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type=BINARY, headers={"Inference-Header-Content-Length": str(header_length)})

    async def index(self, request: Request) -> Response:
        ready = hc.from_index_request(await self._body(request))
        return JSONResponse(hc.to_index(await self.plane.index(ready)))

    async def load(self, request: Request) -> Response:
        target, options = hc.from_load_request(await self._body(request))
        await self.plane.load(request.path_params["model"], target, options)
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        hc.from_unload_request(await self._body(request))
        await self.plane.unload(request.path_params["model"])
        return Response(status_code=200)

    # ------------------------------------------------------------------ bodies

    async def _body(self, request: Request) -> bytes:
        """The whole body, refused (413) as soon as it passes the limit: never read past it."""
        encoding = request.headers.get("content-encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise HttpError(415, f"Content-Encoding '{encoding[:40]}': only uncompressed bodies are accepted")
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not hc.is_length(declared):
                raise HttpError(400, "Content-Length: not a byte count")
            if int(declared) > limit:
                raise HttpError(413, f"request body of {declared} bytes, more than the {limit} accepted")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"request body of more than the {limit} bytes accepted")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _model(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params.get("model", ""), params.get("version", "")


def error_response(method: str, exc: Exception) -> Response:
    """The protocol's error body with the code of `exc`; unexpected failures are logged under a reference."""
    if isinstance(exc, HttpError):
        status, message = exc.status, exc.message
    elif isinstance(exc, errors.MaasError):
        status, message = http_status_of(exc), exc.message
    else:
        ref = uuid.uuid4().hex[:12]
        log.error("internal error in HTTP %s (ref %s)", method, ref, exc_info=exc)
        status, message = 500, f"internal error (ref {ref})"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route does not take) with the protocol's body."""
    assert isinstance(exc, HTTPException)
    message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
