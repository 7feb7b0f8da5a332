"""Plain domain entities: what the domain returns and the converters read.

The db package builds these from rows (`db/reads.py`, or an ORM row's
`to_entity()`); nothing above it sees a row, a session or a connection.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class VersionStatus(enum.StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


class ModelFormat(enum.StrEnum):
    SAFETENSORS = "SAFETENSORS"
    ONNX = "ONNX"
    TORCHSCRIPT = "TORCHSCRIPT"
    TORCH_EXPORT = "TORCH_EXPORT"
    PICKLE = "PICKLE"
    ORT = "ORT"
    PTE = "PTE"
    TOKENIZER = "TOKENIZER"

    @property
    def carries_code(self) -> bool:
        return self in (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.PICKLE)

    @property
    def edge_only(self) -> bool:
        """Edge formats (ORT, ExecuTorch): files for devices that the inference service cannot serve, so only
        additional artifacts of a version, never the one that makes it READY."""
        return self in (ModelFormat.ORT, ModelFormat.PTE)

    @property
    def additional_only(self) -> bool:
        """Never a version's primary artifact: the edge formats, and a text model's tokenizer (data, not a model)."""
        return self.edge_only or self is ModelFormat.TOKENIZER


class RunStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class EventType(enum.StrEnum):
    MODEL_CREATED = "MODEL_CREATED"
    MODEL_DELETED = "MODEL_DELETED"
    VERSION_CREATED = "VERSION_CREATED"
    VERSION_READY = "VERSION_READY"
    VERSION_FAILED = "VERSION_FAILED"
    VERSION_ARCHIVED = "VERSION_ARCHIVED"
    VERSION_DELETED = "VERSION_DELETED"
    ALIAS_MOVED = "ALIAS_MOVED"
    ALIAS_DELETED = "ALIAS_DELETED"
    ARTIFACT_ADDED = "ARTIFACT_ADDED"
    DEPLOYMENT_CREATED = "DEPLOYMENT_CREATED"
    DEPLOYMENT_UPDATED = "DEPLOYMENT_UPDATED"
    DEPLOYMENT_DELETED = "DEPLOYMENT_DELETED"


class VersionOrder(enum.StrEnum):
    NEWEST = "NEWEST"
    OLDEST = "OLDEST"
    METRIC_DESC = "METRIC_DESC"
    METRIC_ASC = "METRIC_ASC"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Open Inference Protocol name: FP32, INT64, ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True)
class Artifact:
    """One stored file of a version (content-addressed: artifacts with the same bytes share a blob)."""

    format: ModelFormat
    size_bytes: int
    sha256: str
    created_at_ms: int


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: int


@dataclass(frozen=True)
class DatasetLineage:
    """What a version was trained (or evaluated and calibrated) on: enough to rebuild its validation split."""

    name: str = ""
    # The data set's arguments as canonical JSON text (sorted keys), so the entity stays hashable.
    args_json: str = "{}"
    path: str = ""
    fingerprint: str = ""
    validation_split: float = 0.0
    seed: int = 0
    # Where its catalog entry came from: "built-in" or "<distribution> <version>" ("" if not recorded).
    origin: str = ""

    @property
    def args(self) -> dict[str, Any]:
        return dict(json.loads(self.args_json))


@dataclass(frozen=True)
class Lineage:
    """Where a version came from, stored as given at CreateVersion (hashable: reads share one per stored text)."""

    source: str = ""
    job_id: str = ""
    parent: VersionRef | None = None
    dataset: DatasetLineage | None = None
    method: str = ""
    # (name, version) pairs sorted by name: maas, python, torch, ...
    software: tuple[tuple[str, str], ...] = ()
    # Where the architecture's catalog entry came from (as DatasetLineage.origin).
    architecture_origin: str = ""
    # The pretrained weights file a fine-tuned version started from: its path under the data root and sha256.
    pretrained_path: str = ""
    pretrained_sha256: str = ""


LINEAGE_SOURCES = ("trainer", "push", "log_model", "optimize")


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    status: VersionStatus
    status_reason: str
    format: ModelFormat
    # The declarative architecture as stored: canonical JSON text (sorted keys).
    # Kept as text so that a read never parses it; converters map it to a Struct.
    architecture_json: str
    signature: Signature
    run_id: str
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    size_bytes: int
    sha256: str
    archived: bool
    aliases: tuple[str, ...]
    created_at_ms: int
    ready_at_ms: int
    # The primary artifact first (once READY), then the others as they were added.
    artifacts: tuple[Artifact, ...] = ()
    # None for versions registered without one (or before lineage was recorded).
    lineage: Lineage | None = None

    @property
    def architecture(self) -> dict[str, Any]:
        return dict(json.loads(self.architecture_json))


@dataclass(frozen=True)
class NewVersion:
    """What a client asks CreateVersion for."""

    model: str
    format: ModelFormat
    architecture: dict[str, Any]
    signature: Signature
    run_id: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: Lineage | None = None


@dataclass(frozen=True)
class Alias:
    model: str
    alias: str
    version: int
    previous_version: int
    updated_at_ms: int


@dataclass(frozen=True)
class Run:
    run_id: str
    name: str
    job_id: str
    status: RunStatus
    params: dict[str, str]
    metrics: dict[str, float]
    started_at_ms: int
    finished_at_ms: int


@dataclass(frozen=True)
class MetricSeries:
    """One key's points, column-wise (parallel lists)."""

    key: str
    steps: list[int]
    values: list[float]
    timestamps_ms: list[int]


@dataclass(frozen=True)
class Event:
    id: int
    type: EventType
    model: str
    version: int
    alias: str
    previous_version: int
    created_at_ms: int
    # Deployment events name the deployment and its generation after the change (model "").
    deployment: str = ""
    generation: int = 0


@dataclass(frozen=True)
class ArtifactInfo:
    size_bytes: int
    sha256: str
    format: ModelFormat


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""


@dataclass(frozen=True)
class TagFilter:
    key: str
    value: str = ""


# ------------------------------------------------------------ deployments


class TargetState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    DRAINING = "DRAINING"


@dataclass(frozen=True)
class DeploymentTarget:
    """A served target: `ref` in canonical form ('model@alias' or 'model/3'), `weight` percent of the traffic."""

    ref: str
    weight: int


@dataclass(frozen=True)
class ShadowTarget:
    ref: str
    sample_percent: int


@dataclass(frozen=True)
class ServingOptions:
    """Per-deployment serving settings; a zero value (None for the delay, "" or None otherwise) keeps the replica's."""

    max_batch_size: int = 0
    max_queue_delay_us: int | None = None
    instances: int = 0
    device: str = ""
    format: ModelFormat | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0


@dataclass(frozen=True)
class DeploymentSpec:
    targets: tuple[DeploymentTarget, ...]
    shadow: ShadowTarget | None = None
    options: ServingOptions = field(default_factory=ServingOptions)


@dataclass(frozen=True)
class TargetStatus:
    ref: str
    version: int
    state: TargetState
    reason: str = ""
    shadow: bool = False


@dataclass(frozen=True)
class ReplicaStatus:
    replica: str
    generation: int
    targets: tuple[TargetStatus, ...]
    reported_at_ms: int = 0


@dataclass(frozen=True)
class Deployment:
    name: str
    spec: DeploymentSpec
    generation: int
    created_at_ms: int
    updated_at_ms: int
    replicas: tuple[ReplicaStatus, ...] = ()
