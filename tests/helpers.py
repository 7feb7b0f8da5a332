"""Builders used by many tests: artifacts, versions, status assertions."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb


def mlp_arch(hidden: int = 8, in_features: int = 4) -> dict[str, Any]:
    """A catalog MLP (one hidden layer, 3 classes) the registry accepts weights for."""
    return {
        "name": "mlp",
        "args": {"in_features": in_features, "hidden": [hidden], "num_classes": 3},
        "input_shape": [in_features],
    }


MLP_ARCH = mlp_arch()


def safetensors_bytes(seed: int = 0, hidden: int = 8, in_features: int = 4) -> bytes:
    """Random weights for `mlp_arch(hidden, in_features)`: the plain module's state_dict layout."""
    rng = np.random.default_rng(seed)
    shapes = {
        "layers.1.weight": (hidden, in_features),
        "layers.1.bias": (hidden,),
        "layers.3.weight": (3, hidden),
        "layers.3.bias": (3,),
    }
    return save_safetensors({k: rng.standard_normal(shape).astype(np.float32) for k, shape in shapes.items()})


def big_mlp(n_floats: int, seed: int = 0) -> tuple[dict[str, Any], bytes]:
    """An architecture and its weights of about `n_floats` float32 values."""
    in_features = max(4, -(-n_floats // 65536))
    hidden = max(1, n_floats // (in_features + 4))
    return mlp_arch(hidden, in_features), safetensors_bytes(seed, hidden, in_features)


def signature() -> common_pb2.Signature:
    return common_pb2.Signature(
        inputs=[common_pb2.TensorSpec(name="input", datatype=common_pb2.DATA_TYPE_FP32, shape=[-1, 4])],
        outputs=[common_pb2.TensorSpec(name="logits", datatype=common_pb2.DATA_TYPE_FP32, shape=[-1, 3])],
    )


def version_request(
    model: str, *, fmt: int = pb.MODEL_FORMAT_SAFETENSORS, architecture: dict[str, Any] | None = None, **kwargs: Any
) -> pb.CreateVersionRequest:
    req = pb.CreateVersionRequest(model=model, format=fmt, signature=signature(), **kwargs)  # type: ignore[arg-type]
    if architecture is not None:
        req.architecture.update(architecture)
    elif fmt == pb.MODEL_FORMAT_SAFETENSORS:
        req.architecture.update(MLP_ARCH)
    return req


def upload_messages(
    model: str,
    version: int,
    data: bytes,
    *,
    chunk: int = 1024 * 1024,
    sha256: str | None = None,
    size: int | None = None,
    fmt: int = 0,
) -> Iterator[pb.UploadArtifactRequest]:
    header = pb.ArtifactHeader(
        model=model,
        version=version,
        size_bytes=len(data) if size is None else size,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        format=fmt,  # type: ignore[arg-type]
    )
    yield pb.UploadArtifactRequest(header=header)
    for start in range(0, len(data), chunk):
        yield pb.UploadArtifactRequest(chunk=data[start : start + chunk])


@contextlib.contextmanager
def reserved_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port held for the whole block that refuses connections: bound with SO_REUSEPORT, never listening.

    A server started later on it binds beside it and gets its connections (gRPC servers set
    SO_REUSEPORT by default; asyncio's start_server with reuse_port=True). Unlike binding a free
    port and releasing it again, nothing else can take the port in between.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
        yield int(sock.getsockname()[1])


def unused_port() -> int:
    """A port number free right now, for what cannot bind port 0 and report the port it got.

    Only for those: PostgreSQL started by a test, the host ports docker-compose's services are
    mapped to, and a service's /metrics endpoint (its setting takes 0 as "off"). The number is
    released before it is used, so another program may take it first; servers of our own bind
    port 0 instead and print their address.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def aiter_of(items: Iterator[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def ready_version(stub: Any, model: str, data: bytes | None = None, **kwargs: Any) -> pb.ModelVersion:
    """Create (model if needed) a version and upload a valid artifact: READY."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stub.CreateModel(pb.CreateModelRequest(name=model))
    version = await stub.CreateVersion(version_request(model, **kwargs))
    payload = data if data is not None else safetensors_bytes(version.version)
    return await stub.UploadArtifact(aiter_of(upload_messages(model, version.version, payload)))


@contextlib.asynccontextmanager
async def raises_code(code: grpc.StatusCode) -> AsyncIterator[None]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        yield
    assert info.value.code() == code, f"expected {code}, got {info.value.code()}: {info.value.details()}"


def raw_safetensors(header: bytes, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A hand-made safetensors file, for malformed-header tests."""
    n = len(header) if header_len is None else header_len
    return struct.pack("<Q", n) + header + data
