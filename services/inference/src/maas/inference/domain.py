"""The inference service's domain types: what the data plane takes and returns.

Plain classes, free of generated protocol code, so that validation, the data
plane and their in-process tests never see a protobuf message (and can live
next to tritonclient, whose generated modules register the same `inference.*`
symbols as ours). `converters` turns the protocol's messages into these and
back.

Requests and results are built once per call on the hot path: slotted
dataclasses (a frozen dataclass's __init__ costs several times more), and raw
input bytes are referenced, never copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from maas.inference.served import ServedVersion
    from maas.inference.tensors import TensorSpec


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


# ---------------------------------------------------------------- inference


@dataclass(slots=True)
class InputTensor:
    """One input as the client declared it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    contents: Sequence[Any] | None
    """The typed values of `datatype` (its `contents` field), or None when the client sent no typed contents."""


@dataclass(slots=True)
class InferRequest:
    """One inference request, unvalidated: validation bounds everything in it before allocating."""

    model_name: str
    model_version: str
    id: str
    inputs: Sequence[InputTensor]
    raw: Sequence[bytes | memoryview | None]
    """raw_input_contents as received (the message's own bytes, not a copy); empty when typed contents are used.

    Over HTTP an input may come as binary data beside others given as JSON: those
    have None here and their values in `contents`."""
    outputs: Sequence[str]
    """Names of the requested outputs; empty for every output in signature order."""


@dataclass(slots=True)
class InferResult:
    """One request's answer."""

    served: ServedVersion
    request_id: str
    outputs: list[tuple[TensorSpec, np.ndarray]]


# --------------------------------------------------------------- repository


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Target:
    """Follow `alias`, or serve exactly `version`."""

    alias: str = ""
    version: int = 0

    def ref(self, model: str) -> str:
        return f"{model}/{self.version}" if self.version else f"{model}@{self.alias}"


@dataclass(frozen=True)
class ModelOptions:
    """Per-model overrides of the replica's settings (a deployment's serving options, RepositoryModelLoad's config).

    None keeps the replica's own setting."""

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_size: int | None = None
    instances: int | None = None
    device: str | None = None
    """"auto", "cpu", "cuda" or "cuda:N"."""
    format: str | None = None
    """The artifact served: "onnx" (onnxruntime) or "safetensors" (torch)."""


@dataclass(frozen=True)
class ServedTarget:
    """One target of a served name: a registry model at an alias or a pinned version, and its share of requests.

    A deployment's served name need not be a model's: `model` is the registry's,
    the served name is the entry's. A shadow gets copies of requests (issue 14.3),
    never the caller's answer; its `weight` is the percent of requests copied.
    """

    model: str
    target: Target
    weight: int = 100
    shadow: bool = False

    @property
    def ref(self) -> str:
        return self.target.ref(self.model)
