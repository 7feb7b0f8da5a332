"""Settings of the inference service (env prefix MAAS_INFERENCE_).

How it reaches the registry (address, deadline, token, TLS and mutual TLS) is the
shared `RegistryConnection`, as in the trainer: `MAAS_INFERENCE_REGISTRY_TOKEN` needs
the replica scope (read, and report what it serves of each deployment); write lets
RepositoryModelLoad write deployments, admin lets RepositoryModelUnload delete them.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ByteSize, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from maas.common import errors, names
from maas.common.settings import RegistryConnection, ServerSettings


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class InferenceSettings(ServerSettings, RegistryConnection):
    model_config = SettingsConfigDict(env_prefix="MAAS_INFERENCE_", extra="ignore")

    port: int = Field(8001, ge=0, le=65535, description="gRPC port (the Open Inference Protocol's usual 8001).")
    metrics_port: int = Field(8002, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it.")
    http: bool = Field(
        True,
        description="Also serve the Open Inference Protocol's HTTP/REST binding (KServe V2, with Triton's binary "
        "tensor data, repository and statistics extensions) on http_port, with the same models, batching, tokens, "
        "TLS files and message size limit as gRPC.",
    )
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP/REST port (Triton's 8000; 0 picks a free one).")
    http_host: str | None = Field(
        None, description="Address the HTTP/REST port binds to; default: host. The exposure rule of host holds for it."
    )
    registry_timeout: float = Field(10.0, gt=0, description="Deadline in seconds of each registry call.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models to serve from the start, comma-separated: 'name@alias' follows an alias, "
        "'name/3' pins version 3, a bare 'name' follows default_alias.",
    )
    default_alias: str = Field(
        "production", description="The alias a model follows when it is loaded without an alias or version."
    )
    cache_dir: Path = Field(
        Path(".maas/inference-cache"), description="Local cache of downloaded artifacts (by sha256)."
    )
    dynamic_batching: bool = Field(
        True, description="Group concurrent requests into one execution; off: every request executes alone."
    )
    max_batch_size: int = Field(
        32, ge=1, le=4096, description="Most rows one execution takes (and one request may carry)."
    )
    max_queue_delay_us: int = Field(
        200,
        ge=0,
        le=10_000_000,
        description="Longest a request waits for its batch to fill, in microseconds. It never waits "
        "when no other request is expected.",
    )
    preferred_batch_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Batch sizes sent at once when reached (comma-separated)."
    )
    max_queue_size: int = Field(
        512, ge=1, description="Requests a model version may hold queued; beyond, RESOURCE_EXHAUSTED at once."
    )
    instances: int = Field(1, ge=1, le=64, description="Executions of one model version that may run at once.")
    intra_op_threads: int = Field(1, ge=1, le=256, description="Threads one execution may use (torch, onnxruntime).")
    preferred_format: Literal["onnx", "safetensors"] = Field(
        "onnx",
        description="Which artifact of a version that has both to serve: 'onnx' (onnxruntime; measured 1.5-19x "
        "faster than torch on the catalog models at batch 1-32 on one CPU thread, see the README) or "
        "'safetensors' (torch).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: auto uses CUDA when a GPU is visible."
    )
    max_request_elements: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest element count of one input tensor of a request."
    )
    max_text_strings: int = Field(
        64,
        ge=1,
        le=65_536,
        description="Text models: most strings (rows) one request may carry; max_batch_size bounds it too.",
    )
    max_text_bytes: int = Field(
        64 * 1024,
        ge=1,
        le=16 * 1024 * 1024,
        description="Text models: longest string of a request, in UTF-8 bytes (the tokenizer then keeps at most "
        "the model's max_length tokens of it).",
    )
    drain_seconds: float = Field(
        30.0, ge=0, description="After a swap or unload, how long in-flight requests of the old version may take."
    )
    memory_limit: ByteSize = Field(
        ByteSize(0),
        ge=0,
        description="Most memory the loaded versions may hold together, in bytes or as a size such as 512MiB; 0: no "
        "limit. A version counts the size of the files it is built from (its weights). Beyond it, the least recently "
        "used versions are unloaded (after their in-flight requests) and loaded again on their next request.",
    )
    shadow_max_inflight: int = Field(
        16,
        ge=1,
        le=4096,
        description="Copies of requests to deployments' shadows that may be outstanding at once in this replica; "
        "past it a copy is dropped (and counted), so a slow shadow never holds more.",
    )
    shadow_timeout: float = Field(
        10.0, gt=0, le=600, description="Longest a copy of a request to a shadow may take (then counted as a timeout)."
    )
    follow: bool = Field(
        True,
        description="Follow the registry's events: converge to its deployments as they change, and swap when a "
        "followed alias moves.",
    )
    replica_id: str = Field(
        "",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})?$",
        description="This replica's name in the deployments' reports (1-128 of A-Z a-z 0-9 _ . : -); default: host "
        "name:port (with port 0, host name-process id; each of several workers adds -wN).",
    )
    serve_alias: str = Field(
        "",
        description="Serve this alias of every model under the model's own name, unless a deployment or "
        "MAAS_INFERENCE_MODELS names it: with 'production' (what maas up sets), train, promote and predict need no "
        "load step. Empty: off, only deployments and MAAS_INFERENCE_MODELS are served.",
    )
    resync_seconds: float = Field(
        60.0, gt=0, description="While following, re-resolve every followed alias this often (a safety net)."
    )
    reconnect_initial_seconds: float = Field(0.5, gt=0, description="First delay before reconnecting to the registry.")
    reconnect_max_seconds: float = Field(30.0, gt=0, description="Longest delay between reconnects to the registry.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Serving processes sharing the gRPC port (SO_REUSEPORT); each loads the models and "
        "follows the registry on its own. Needs a fixed port.",
    )

    @field_validator("models", "preferred_batch_sizes", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("serve_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if value:
            try:
                names.alias_name(value, "serve_alias", allow_reserved=True)
            except errors.InvalidArgument as exc:
                raise ValueError(exc.message) from None
        return value


def http_settings(settings: InferenceSettings) -> InferenceSettings:
    """The settings as the HTTP/REST listener binds: host is http_host (the exposure rule reads host)."""
    return settings.model_copy(update={"host": settings.http_host or settings.host})


def replica_id(settings: InferenceSettings) -> str:
    """`replica_id`, else host name:port (stable across restarts on a fixed port), else host name-process id."""
    if settings.replica_id:
        return settings.replica_id
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).lstrip("_.-")[:100] or "replica"
    return f"{host}:{settings.port}" if settings.port else f"{host}-{os.getpid()}"
