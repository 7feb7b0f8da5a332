"""What an architecture or data-set plugin declares, without torch.

A plugin is code the operator installs (a Python distribution with a
`maas.architectures` or `maas.datasets` entry point), never code a client
sends: a job spec or an architecture document only names an entry and gives
it arguments, which the entry's pydantic model checks (types, ranges,
defaults) before anything is built. Everything here imports without torch, so
the registry can read a declaration (its arguments, its parameter table) and
refuse weights no runtime could load; torch is imported only inside `build`.

    class TinyArgs(ArchitectureArgs):
        width: int = Field(32, ge=1, le=1024, description="channels of each block")

    class Tiny(ArchitecturePlugin[TinyArgs]):
        name = "tiny"
        description = "two convolutions and a linear head"
        Args = TinyArgs

        def build(self, args: TinyArgs, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
            from torch import nn
            ...
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from maas.common.errors import InvalidArgument

if TYPE_CHECKING:
    from torch import nn

MAX_CLASSES = 100_000
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Open Inference Protocol datatypes an input may declare.
DATATYPES = ("FP32", "FP16", "BF16", "FP64", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL", "BYTES")
PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
PathUse = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class TensorSpec:
    """One input of an architecture: its name, datatype and shape without the batch dimension.

    In a declaration a dimension of -1 takes any size (a sequence length, an
    image side) and `shape=None` takes whatever shape the data set has; in a
    version's signature every dimension but a variable length is concrete.
    """

    name: str
    datatype: str = "FP32"
    shape: tuple[int, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class TensorNeed:
    """One tensor of a network's state_dict: its shape and safetensors dtype (F32, I64, ...)."""

    shape: tuple[int, ...]
    dtype: str = "F32"


class ArchitectureArgs(BaseModel):
    """Base of an architecture's arguments: strict JSON values, nothing but the declared fields.

    Every architecture classifies into `num_classes` outputs; a job fills it in
    from its data set. Subclasses add fields with `pydantic.Field` bounds and a
    description (what `maas catalog show` prints) and may validate fields
    against each other; the input shape is in the validation context
    (`info.context["input_shape"]`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_classes: int = Field(10, ge=1, le=MAX_CLASSES, description="Output classes (a job takes its data set's).")


class DatasetArgs(BaseModel):
    """Base of a data set's arguments: strict JSON values, nothing but the declared fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


A = TypeVar("A", bound=ArchitectureArgs)
D = TypeVar("D", bound=DatasetArgs)


class ArchitecturePlugin(ABC, Generic[A]):
    """A network the catalog can build from a declarative document.

    `name` must equal the entry point's name. `inputs` declares what the
    network takes (several inputs, any datatype: e.g. int64 input_ids and
    attention_mask); the trainer feeds single-input networks today. With
    `normalize` the trainer measures the raw inputs' per-channel mean and std
    and the served module applies them, so clients send raw values.
    """

    name: str
    description: str = ""
    Args: type[A]
    inputs: tuple[TensorSpec, ...] = (TensorSpec("input"),)
    normalize: bool = True

    def defaults(self, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
        """Arguments a job spec leaves out that its data set implies (merged under the spec's own)."""
        return {"num_classes": num_classes}

    def check(self, args: A, input_shape: tuple[int, ...]) -> None:
        """Refuse arguments that do not fit this input shape: raise InvalidArgument naming the field."""

    def signature_inputs(self, args: A, input_shape: tuple[int, ...], input_name: str) -> tuple[TensorSpec, ...]:
        """The concrete inputs of a version built with `args` for rows of `input_shape`."""
        return (TensorSpec(input_name, self.inputs[0].datatype, input_shape),)

    def repeats_channels(self, args: A, input_shape: tuple[int, ...]) -> bool:
        """True when the served module repeats a 1-channel input to 3 channels before the network."""
        return False

    @abstractmethod
    def build(self, args: A, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """The plain network, randomly initialized: its state_dict is exactly what a version stores."""

    def head(self, args: A) -> str | None:
        """The classifier head's module path in the plain network ("fc", "classifier.1"); None: none declared.

        Fine-tuning from pretrained weights replaces the head with a new one
        sized to the data set's classes (and `freeze_backbone` trains it alone);
        an architecture without a declared head cannot be fine-tuned.
        """
        return None

    def parameters(self, args: A, num_classes: int, input_shape: tuple[int, ...]) -> dict[str, TensorNeed] | None:
        """The state_dict's tensors in order, computed without torch; None: derived by building on torch's meta device.

        A registry without torch (its image has none) can only check the weights
        of architectures that give this table.
        """
        return None


@dataclass(frozen=True)
class DatasetShape:
    """What a data set yields: one row's shape (no batch dimension) and one label per class."""

    input_shape: tuple[int, ...]
    labels: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LoadOptions:
    seed: int = 0
    allow_download: bool = False  # the operator's MAAS_TRAINER_ALLOW_DOWNLOAD
    verify: bool = True  # the operator's MAAS_TRAINER_VERIFY_DATASETS


@dataclass
class LoadedData:
    """Training and (optional) test rows as tensors of raw values, as clients will send them.

    x: [N, *input_shape] uint8 or float32; y: [N] int64 class indices.
    """

    x: Any
    y: Any
    test_x: Any | None = None
    test_y: Any | None = None


def safe_path(data_root: Path, relative: str, field: str = "dataset.path") -> Path:
    """`relative` under `data_root`, refusing anything that could leave it (absolute, '..', links out)."""
    if not relative or len(relative) > 1024 or "\x00" in relative or "\\" in relative or "%" in relative:
        raise InvalidArgument(f"{field}: must be a plain relative path under the data root")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or not all(PATH_PART.fullmatch(part) for part in pure.parts):
        raise InvalidArgument(f"{field}: folder names of letters, digits, '_', '.', '-' under the data root")
    root = data_root.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(root):
        raise InvalidArgument(f"{field}: must stay under the data root")
    return target


@dataclass(frozen=True)
class DataSource:
    """Where a data set may read: the operator's data root and the job's path under it.

    `relative` is the job's `dataset.path` as the client gave it; `path` is it
    resolved and checked to stay under the root. A loader reads nothing else
    (`file()` checks any further name the same way).
    """

    root: Path
    relative: str = ""

    @property
    def path(self) -> Path | None:
        return safe_path(self.root, self.relative) if self.relative else None

    def file(self, relative: str) -> Path:
        return safe_path(self.root, relative)


class DatasetPlugin(ABC, Generic[D]):
    """A data set the trainer can load into memory by name.

    `path` says whether a job gives `dataset.path` (a file or folder under the
    data root). `describe` must be cheap (it runs when a job is submitted);
    `load` runs in the job's worker process, bounded in time.
    """

    name: str
    description: str = ""
    Args: type[D]
    path: PathUse = "none"

    @abstractmethod
    def describe(self, args: D, source: DataSource) -> DatasetShape:
        """Row shape and labels for these arguments (FailedPrecondition when the data is not there)."""

    @abstractmethod
    def load(self, args: D, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        """The rows as tensors (or numpy arrays); they are checked against `shape`."""

    def fingerprint(self, args: D, source: DataSource, seed: int) -> str | None:
        """What identifies the data read, for lineage; None: the SDK's default (files' digest, or args and seed)."""
        return None
