"""The job spec as typed, frozen models: what a client asks (`JobRequest`) and what the job runs (`JobSpec`).

A SubmitJob request becomes a `JobRequest` (`parse`): every field's type,
range and choices are the model's own constraints, so a spec wrong in any
field is INVALID_ARGUMENT naming that field (`optimizer.lr: ...`) before
anything is looked up or queued. proto3 cannot tell zero from unset, so the
converter leaves zero fields out and the model's defaults apply (the
optimizer's learning rate and momentum follow its name; an early-stopping or
promotion rule's direction follows its metric; a model's own defaults live
with its catalog entry and are filled in by `maas.trainer.spec.resolve`).

`maas.trainer.spec.resolve` turns a request into the `JobSpec`: the
architecture's arguments resolved by its catalog entry, the data set's
labels and input shape, every file the job will read pinned by sha256. That
one object is stored with the job (`stored()`, JSON), given to the worker in
spec.json, and read back by the runner and the hand-off - attributes, never
string keys. An optimization job is the same JobSpec with `optimize` set and
no model, optimizer or schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from maas.common import names
from maas.common.errors import InvalidArgument
from maas.common.metric_direction import higher_is_better as natural_direction

# The default learning rate of each optimizer.
OPTIMIZERS = {"sgd": 0.01, "adam": 0.001, "adamw": 0.001}
TrainingMetric = Literal["val_loss", "val_accuracy", "train_loss", "train_accuracy"]
METRICS: tuple[str, ...] = TrainingMetric.__args__  # type: ignore[attr-defined]
OptimizeMetric = Literal["val_accuracy", "accuracy_delta", "size_ratio", "latency_ratio"]
LOWER_IS_BETTER = ("size_ratio", "latency_ratio")
SHA256 = r"^[0-9a-f]{64}$"
MAX_SEED = 2**31 - 1


def _checked(check: Callable[[Any, str], Any]) -> AfterValidator:
    """A maas.common.names check as a field validator: its message, the field path pydantic knows."""

    def run(value: Any) -> Any:
        try:
            return check(value, "\0")
        except InvalidArgument as exc:
            raise ValueError(exc.message.removeprefix("\0: ")) from None

    return AfterValidator(run)


ModelName = Annotated[str, _checked(names.model_name)]
AliasName = Annotated[str, _checked(names.alias_name)]
Description = Annotated[str, _checked(names.text_value)]
Tags = Annotated[dict[str, str], _checked(names.tags)]


def _finite(value: Any) -> Any:
    """No NaN or +-Inf anywhere in free-form arguments: the spec is stored and handed on as JSON, which has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must hold finite numbers only")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _finite(item)
    return value


Arguments = Annotated[dict[str, Any], AfterValidator(_finite)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ModelRef(Frozen):
    name: str = Field(max_length=64)
    args: Arguments = {}


class DatasetRef(Frozen):
    name: str = Field("", max_length=64)
    path: str = Field("", max_length=1024)
    args: Arguments = {}


class Optimizer(Frozen):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(ge=1e-8, le=10.0)
    momentum: float = Field(ge=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any) -> Any:
        """The learning rate and momentum default by optimizer: 0.01 and 0.9 for SGD, 0.001 and none for Adam(W)."""
        if isinstance(data, dict):
            name = data.get("name") or "sgd"
            data = {"lr": OPTIMIZERS.get(name, 0.001), "momentum": 0.9 if name == "sgd" else 0.0, **data}
        return data


class Schedule(Frozen):
    name: Literal["none", "step", "cosine", "exponential"] = "none"
    step_size: int = Field(1, ge=1, le=10_000)
    gamma: float = Field(0.1, ge=1e-6, le=1.0)


def _direction(data: Any, default: Callable[[str], bool], metric: str) -> Any:
    """`higher_is_better` as given, else the metric's natural direction."""
    if isinstance(data, dict) and data.get("higher_is_better") is None:
        data = {**data, "higher_is_better": default(str(data.get("metric") or metric))}
    return data


class EarlyStopping(Frozen):
    metric: TrainingMetric
    patience: int = Field(3, ge=1, le=10_000)
    higher_is_better: bool
    min_delta: float = Field(0.0, ge=0.0, le=1e6)

    @model_validator(mode="before")
    @classmethod
    def _natural(cls, data: Any) -> Any:
        return _direction(data, natural_direction, "val_loss")


class Promotion(Frozen):
    """Move `alias` to the new version when its `metric` passes `threshold` (in the metric's direction)."""

    alias: AliasName
    metric: str = "val_accuracy"
    threshold: float = Field(0.0, ge=-1e12, le=1e12)
    higher_is_better: bool


class TrainingPromotion(Promotion):
    metric: TrainingMetric = "val_accuracy"

    @model_validator(mode="before")
    @classmethod
    def _natural(cls, data: Any) -> Any:
        return _direction(data, natural_direction, "val_accuracy")


class OptimizePromotion(Promotion):
    metric: OptimizeMetric = "val_accuracy"

    @model_validator(mode="before")
    @classmethod
    def _natural(cls, data: Any) -> Any:
        return _direction(data, lambda metric: metric not in LOWER_IS_BETTER, "val_accuracy")


class PretrainedRequest(Frozen):
    """Vision weights under the data root to start from (`--pretrained`), optionally pinned."""

    path: str = Field("", max_length=1024)
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")


class PretrainedWeights(Frozen):
    """The weights file a job reads: as checked at submission, with the digest it must still have."""

    path: str
    sha256: str = Field(pattern=SHA256)
    format: Literal["safetensors", "pickle"]


class CheckpointRequest(Frozen):
    """A text encoder's checkpoint folder under the data root, with optional sha256 pins per file."""

    path: str = Field("", max_length=1024)
    sha256: dict[str, Annotated[str, Field(pattern=SHA256)]] = {}


class Checkpoint(Frozen):
    """A checkpoint as read at submission: every file the worker may read, with its sha256."""

    path: str
    sha256: dict[str, Annotated[str, Field(pattern=SHA256)]]


class TextSection(Frozen):
    max_length: int = Field(ge=1, le=8192)
    pretrained_checkpoint: Checkpoint | None = None


class Architecture(Frozen):
    """The catalog entry's document: name, resolved arguments, one row's shape, the class labels."""

    name: str
    args: Arguments
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class VersionRef(Frozen):
    model: str
    version: int = Field(ge=1)


def _source(value: str) -> str:
    if not value:
        raise ValueError("name the version to optimize (name/3, name@alias or name)")
    try:
        names.parse_ref(value, "\0")
    except InvalidArgument as exc:
        raise ValueError(exc.message.removeprefix("\0: ")) from None
    return value


def _formats(value: Any) -> Any:
    """Format names lower-cased, each once, in the order asked."""
    if isinstance(value, list | tuple):
        return tuple(dict.fromkeys(str(v).lower() for v in value))
    return value


class OptimizeRequest(Frozen):
    """An OptimizeJob spec as the client gave it: the version to optimize and what to make of it."""

    source: Annotated[str, AfterValidator(_source)] = Field(max_length=200)
    quantize: Literal["", "int8"] = ""
    method: Literal["", "dynamic", "static"] = ""
    formats: Annotated[tuple[Literal["ort", "pte"], ...], BeforeValidator(_formats)] = ()
    dataset: DatasetRef | None = None
    register_as: Annotated[str, AfterValidator(lambda v: names.model_name(v, "register_as") if v else v)] = ""
    promotion: OptimizePromotion | None = None
    calibration_batches: int = Field(8, ge=1, le=1000)

    @model_validator(mode="after")
    def _coherent(self) -> OptimizeRequest:
        if self.method and not self.quantize:
            raise ValueError("method: only with quantize")
        if not self.quantize and not self.formats:
            raise ValueError("nothing to do: ask for quantize int8 and/or formats (ort, pte)")
        if self.quantize and "pte" in self.formats:
            # The .pte is exported from the torch module; an int8 ONNX model has none to export.
            raise ValueError("formats: pte is exported from the float torch weights; ask for it without --quantize")
        if self.register_as and not self.quantize:
            raise ValueError("register_as: only with quantize (formats alone add artifacts to the source)")
        if self.promotion is not None and not self.quantize:
            raise ValueError("promotion: only with quantize (a new version)")
        return self


class Optimization(OptimizeRequest):
    """What an optimization job makes of its source version, pinned when it was queued."""

    parent: VersionRef
    dataset_from: str = ""
    dataset_fingerprint: str = ""


class _Common(Frozen):
    """The fields a request and its resolved spec share, with the same constraints."""

    dataset: DatasetRef = DatasetRef()
    validation_split: float = Field(0.1, ge=0.01, le=0.5)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    early_stopping: EarlyStopping | None = None
    freeze_backbone: bool = False
    max_retries: int = Field(2, ge=0, le=10)
    threads: int = Field(0, ge=0, le=256)
    description: Description = ""
    tags: Tags = {}


class JobRequest(_Common):
    """A SubmitJob spec as the client gave it, checked field by field; `parse` makes one."""

    model: ModelRef
    optimizer: Optimizer = Field(default_factory=lambda: Optimizer.model_validate({}))
    schedule: Schedule = Schedule()
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    world_size: int = Field(1, ge=1)
    max_runtime_seconds: int | None = Field(None, ge=1)
    register_as: Annotated[str, AfterValidator(lambda v: names.model_name(v, "register_as") if v else v)] = ""
    promotion: TrainingPromotion | None = None
    pretrained: PretrainedRequest | None = None
    pretrained_checkpoint: CheckpointRequest | None = None

    @field_validator("world_size")
    @classmethod
    def _world(cls, value: int, info: ValidationInfo) -> int:
        most = int((info.context or {}).get("max_world_size") or 0)
        if most and value > most:
            raise ValueError(f"at most {most} (the trainer's max_world_size)")
        return value

    @field_validator("max_runtime_seconds")
    @classmethod
    def _runtime(cls, value: int | None, info: ValidationInfo) -> int | None:
        most = int((info.context or {}).get("max_runtime") or 0)
        if value is not None and most and value > most:
            raise ValueError(f"at most {most} (the trainer's max_runtime_seconds)")
        return value

    @model_validator(mode="after")
    def _promotion_needs_a_version(self) -> JobRequest:
        if self.promotion is not None and not self.register_as:
            raise ValueError("promotion: needs register_as")
        return self


class JobSpec(_Common):
    """The resolved spec: stored with the job, run by the worker, registered by the hand-off."""

    model: ModelRef | None = None  # None: an optimization
    architecture: Architecture | None = None
    optimizer: Optimizer | None = None
    schedule: Schedule | None = None
    epochs: int = Field(0, ge=0, le=10_000)
    batch_size: int = Field(0, ge=0, le=65_536)
    world_size: int = Field(1, ge=1)
    max_runtime_seconds: int = Field(ge=1)
    register_as: str = ""
    promotion: Promotion | None = None
    pretrained: PretrainedWeights | None = None
    text: TextSection | None = None
    optimize: Optimization | None = None

    @model_validator(mode="before")
    @classmethod
    def _placeholders(cls, data: Any) -> Any:
        """Optimization jobs stored by earlier releases carry nameless model/optimizer/schedule sections."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (isinstance(v, dict) and "name" in v and v["name"] == "")}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> JobSpec:
        training = self.model is not None and self.architecture is not None
        if training == (self.optimize is not None):
            raise ValueError("a job either trains (model and architecture) or optimizes (optimize)")
        if training and (self.optimizer is None or self.schedule is None or self.epochs < 1 or self.batch_size < 1):
            raise ValueError("a training job needs an optimizer, a schedule, epochs and a batch size")
        return self

    def stored(self) -> dict[str, Any]:
        """The JSON document stored with the job (and fingerprinted); sections a job does not have are left out."""
        doc = self.model_dump(mode="json")
        for key in ("model", "architecture", "optimizer", "schedule", "text", "optimize"):
            if doc[key] is None:
                del doc[key]
        return doc

    @classmethod
    def load(cls, doc: dict[str, Any]) -> JobSpec:
        """A stored spec read back (the store, the worker): what `stored()` wrote."""
        return cls.model_validate(doc)


def invalid(exc: ValidationError, prefix: str = "") -> InvalidArgument:
    """The first error of a validation as INVALID_ARGUMENT naming its field (`optimizer.lr: ...`)."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] not in ("missing", "value_error") and "input" in first:
        shown = repr(first["input"])
        message += f" (got {shown[:40]}{'...' if len(shown) > 40 else ''})"
    if where:
        field = f"{prefix}.{where}" if prefix else where
        return InvalidArgument(f"{field}: {message}")
    # A rule across fields names its own field first ("promotion: needs register_as").
    named = bool(message.split(":", 1)[0].replace("_", "").isalnum()) and ":" in message
    if prefix:
        return InvalidArgument(f"{prefix}.{message}" if named else f"{prefix}: {message}")
    return InvalidArgument(message)


def parse(raw: dict[str, Any], *, max_world_size: int = 0, max_runtime: int = 0) -> JobRequest:
    """A request's spec (a plain document: the converter's, or a test's) as a JobRequest; INVALID_ARGUMENT if wrong."""
    try:
        return JobRequest.model_validate(raw, context={"max_world_size": max_world_size, "max_runtime": max_runtime})
    except ValidationError as exc:
        raise invalid(exc) from None


def parse_optimize(raw: dict[str, Any]) -> OptimizeRequest:
    """An OptimizeJob request's spec as an OptimizeRequest; INVALID_ARGUMENT naming the field (spec.*) if wrong."""
    try:
        return OptimizeRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid(exc, "spec") from None
