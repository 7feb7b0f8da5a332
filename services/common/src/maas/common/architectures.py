"""Architecture documents and the weights each one needs, without torch.

A model version stored as safetensors carries only weights; its architecture
is a small JSON document naming a catalog entry and its arguments:

    {"name": "lenet", "args": {"in_channels": 1, "num_classes": 10},
     "input_shape": [1, 8, 8], "normalize": {"mean": [4.88], "std": [6.02]},
     "labels": ["0", "1", ...]}

Nothing in it is executed: the name selects an entry of a fixed table and
every argument is type- and range-checked here. The weights are exactly the
plain network's `state_dict()` (what `torchvision.models.resnet18(num_classes=N)`
or the catalog's LeNet/MLP module gives): normalization comes from the
document, and a 1-channel input is repeated to 3 channels for the torchvision
networks without weights of its own.

`expected_tensors` says which tensors, shapes and dtypes an architecture
needs, so the registry (which never imports torch) can refuse weights no
runtime could load. For LeNet and the MLP the shapes follow from the
arguments; for the torchvision networks they come from `catalog_params.json`,
generated from torchvision by `tools/catalog_params.py` (a test compares it
with the real modules, so it cannot drift).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from maas.common.errors import InvalidArgument, some_of

MAX_CLASSES = 100_000
MAX_WIDTH = 65_536
MAX_DIM = 4096

TORCHVISION = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
)
NAMES = ("lenet", "mlp", *TORCHVISION)

# Weights saved before the plain layout: Normalized(net) with mean/std buffers,
# and Sequential(ToRGB(), net) inside it for 1-channel torchvision inputs.
LEGACY_PREFIX = "net."
LEGACY_RGB_PREFIX = "net.1."
LEGACY_BUFFERS = ("mean", "std")


@dataclass(frozen=True)
class Architecture:
    """A validated architecture document."""

    name: str
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    input_name: str = "input"
    output_name: str = "logits"
    num_classes: int = 0

    @property
    def to_rgb(self) -> bool:
        """A torchvision network fed 1-channel images: the channel is repeated three times."""
        return self.name in TORCHVISION and self.input_shape[0] == 1

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "args": dict(self.args),
            "input_shape": list(self.input_shape),
            "input_name": self.input_name,
            "output_name": self.output_name,
        }
        if self.mean:
            doc["normalize"] = {"mean": list(self.mean), "std": list(self.std)}
        if self.labels:
            doc["labels"] = list(self.labels)
        return doc

    def signature(self) -> dict[str, Any]:
        """Input and output tensors, with -1 for the batch dimension."""
        return {
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, *self.input_shape]}],
            "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, self.num_classes]}],
        }


@dataclass(frozen=True)
class TensorNeed:
    """One tensor the architecture's state_dict holds: safetensors dtype and shape."""

    shape: tuple[int, ...]
    dtype: str = "F32"


# ------------------------------------------------------------ argument checks


def _int(args: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    value = args.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"architecture.args.{key}: must be an integer in [{lo}, {hi}]")
    return value


def _float(args: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise InvalidArgument(f"architecture.args.{key}: must be a number in [{lo}, {hi}]")
    return float(value)


def _int_list(args: dict[str, Any], key: str, default: list[int], max_len: int, hi: int) -> list[int]:
    value = args.get(key, default)
    if not isinstance(value, list) or len(value) > max_len:
        raise InvalidArgument(f"architecture.args.{key}: must be a list of at most {max_len} integers")
    out = []
    for item in value:
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= hi:
            raise InvalidArgument(f"architecture.args.{key}: entries must be integers in [1, {hi}]")
        out.append(item)
    return out


def _only(args: dict[str, Any], allowed: set[str], name: str) -> None:
    extra = set(args) - allowed
    if extra:
        raise InvalidArgument(f"architecture.args: {some_of(extra)} not accepted by '{name}'")


# ------------------------------------------------- resolved arguments per entry


@dataclass(frozen=True)
class LeNetArgs:
    in_channels: int
    num_classes: int
    input_size: int
    padding: int

    @property
    def side(self) -> int:
        """Height and width of the feature map after the second pooling."""
        return ((self.input_size + 2 * self.padding - 4) // 2 + 2 * self.padding - 4) // 2


@dataclass(frozen=True)
class MLPArgs:
    in_features: int
    hidden: tuple[int, ...]
    num_classes: int
    dropout: float


@dataclass(frozen=True)
class TorchvisionArgs:
    name: str
    num_classes: int


ResolvedArgs = LeNetArgs | MLPArgs | TorchvisionArgs


def _lenet(args: dict[str, Any], shape: tuple[int, ...]) -> LeNetArgs:
    _only(args, {"in_channels", "num_classes", "padding"}, "lenet")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise InvalidArgument("architecture.input_shape: lenet takes square images [C, H, W]")
    in_channels = _int(args, "in_channels", shape[0], 1, 64)
    if in_channels != shape[0]:
        raise InvalidArgument("architecture.args.in_channels: differs from input_shape")
    num_classes = _int(args, "num_classes", 10, 1, MAX_CLASSES)
    resolved = LeNetArgs(in_channels, num_classes, shape[1], _int(args, "padding", 0, 0, 8))
    if resolved.side < 1:
        raise InvalidArgument(f"architecture: input of size {shape[1]} is too small for lenet")
    return resolved


def _mlp(args: dict[str, Any], shape: tuple[int, ...]) -> MLPArgs:
    _only(args, {"in_features", "hidden", "num_classes", "dropout"}, "mlp")
    flat = math.prod(shape)
    in_features = _int(args, "in_features", flat, 1, MAX_WIDTH * 16)
    if in_features != flat:
        raise InvalidArgument("architecture.args.in_features: differs from the size of input_shape")
    hidden = tuple(_int_list(args, "hidden", [128], 16, MAX_WIDTH))
    num_classes = _int(args, "num_classes", 10, 1, MAX_CLASSES)
    return MLPArgs(in_features, hidden, num_classes, _float(args, "dropout", 0.0, 0.0, 0.9))


def _torchvision(name: str) -> Callable[[dict[str, Any], tuple[int, ...]], TorchvisionArgs]:
    def resolve(args: dict[str, Any], shape: tuple[int, ...]) -> TorchvisionArgs:
        _only(args, {"num_classes", "in_channels"}, name)
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise InvalidArgument(f"architecture.input_shape: {name} takes [1 or 3, H, W] images")
        if "in_channels" in args and _int(args, "in_channels", None, 1, 3) != shape[0]:
            raise InvalidArgument("architecture.args.in_channels: differs from input_shape")
        return TorchvisionArgs(name, _int(args, "num_classes", 1000, 1, MAX_CLASSES))

    return resolve


RESOLVERS: dict[str, Callable[[dict[str, Any], tuple[int, ...]], ResolvedArgs]] = {
    "lenet": _lenet,
    "mlp": _mlp,
    **{name: _torchvision(name) for name in TORCHVISION},
}


def resolve_args(arch: Architecture) -> ResolvedArgs:
    """The entry's arguments with defaults filled in (the document was validated by `parse`)."""
    return RESOLVERS[arch.name](dict(arch.args), arch.input_shape)


# ------------------------------------------------------------------ documents


def parse(doc: dict[str, Any]) -> Architecture:
    """Validate an architecture document; InvalidArgument names what is wrong."""
    if not isinstance(doc, dict):
        raise InvalidArgument("architecture: must be an object")
    name = doc.get("name")
    if not isinstance(name, str) or name not in RESOLVERS:
        raise InvalidArgument(
            f"architecture.name: unknown architecture '{str(name)[:40]}' (known: {', '.join(sorted(RESOLVERS))})"
        )
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise InvalidArgument("architecture.args: must be an object")
    raw_shape = doc.get("input_shape")
    if (
        not isinstance(raw_shape, list)
        or not 1 <= len(raw_shape) <= 4
        or not all(
            not isinstance(d, bool) and isinstance(d, int | float) and float(d).is_integer() and 1 <= d <= MAX_DIM
            for d in raw_shape
        )
    ):
        raise InvalidArgument("architecture.input_shape: 1-4 positive dimensions (without the batch)")
    shape = tuple(int(d) for d in raw_shape)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    norm = doc.get("normalize")
    if norm is not None:
        if not isinstance(norm, dict):
            raise InvalidArgument("architecture.normalize: must be an object with mean and std")
        mean = _floats(norm.get("mean"), "mean")
        std = _floats(norm.get("std"), "std")
        if len(mean) != len(std) or len(mean) not in (1, shape[0]):
            raise InvalidArgument("architecture.normalize: mean and std need 1 or input_shape[0] values each")
        if any(s <= 0 for s in std):
            raise InvalidArgument("architecture.normalize.std: values must be positive")
    labels = doc.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(lbl, str) and len(lbl) <= 200 for lbl in labels):
        raise InvalidArgument("architecture.labels: must be a list of short strings")
    input_name = doc.get("input_name", "input")
    output_name = doc.get("output_name", "logits")
    for key, value in (("input_name", input_name), ("output_name", output_name)):
        if not isinstance(value, str) or not value.isidentifier() or len(value) > 64:
            raise InvalidArgument(f"architecture.{key}: must be a short identifier")
    num_classes = RESOLVERS[name](dict(args), shape).num_classes
    if labels and len(labels) != num_classes:
        raise InvalidArgument("architecture.labels: one label per class")
    return Architecture(name, dict(args), shape, mean, std, tuple(labels), input_name, output_name, num_classes)


def _floats(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or len(value) > 64:
        raise InvalidArgument(f"architecture.normalize.{key}: must be a list of 1-64 numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidArgument(f"architecture.normalize.{key}: must be finite numbers")
        out.append(float(v))
    return tuple(out)


# ------------------------------------------------------------ the weights needed


def expected_tensors(arch: Architecture) -> dict[str, TensorNeed]:
    """Every tensor of the plain network's state_dict, in its order, with shape and dtype."""
    resolved = resolve_args(arch)
    if isinstance(resolved, LeNetArgs):
        return _lenet_tensors(resolved)
    if isinstance(resolved, MLPArgs):
        return _mlp_tensors(resolved)
    return {
        name: TensorNeed(tuple(resolved.num_classes if d == "num_classes" else int(d) for d in dims), dtype)
        for name, dims, dtype in _torchvision_table()[resolved.name]
    }


def _linear(out: dict[str, TensorNeed], prefix: str, n_in: int, n_out: int) -> None:
    out[f"{prefix}.weight"] = TensorNeed((n_out, n_in))
    out[f"{prefix}.bias"] = TensorNeed((n_out,))


def _lenet_tensors(a: LeNetArgs) -> dict[str, TensorNeed]:
    out = {
        "conv1.weight": TensorNeed((6, a.in_channels, 5, 5)),
        "conv1.bias": TensorNeed((6,)),
        "conv2.weight": TensorNeed((16, 6, 5, 5)),
        "conv2.bias": TensorNeed((16,)),
    }
    _linear(out, "fc1", 16 * a.side * a.side, 120)
    _linear(out, "fc2", 120, 84)
    _linear(out, "fc3", 84, a.num_classes)
    return out


def _mlp_tensors(a: MLPArgs) -> dict[str, TensorNeed]:
    # layers = Sequential(Flatten, [Linear, ReLU, (Dropout)]..., Linear)
    out: dict[str, TensorNeed] = {}
    index, width = 1, a.in_features
    for h in a.hidden:
        _linear(out, f"layers.{index}", width, h)
        index += 3 if a.dropout > 0 else 2
        width = h
    _linear(out, f"layers.{index}", width, a.num_classes)
    return out


@cache
def _torchvision_table() -> dict[str, list[tuple[str, list[int | str], str]]]:
    text = resources.files("maas.common").joinpath("catalog_params.json").read_text(encoding="utf-8")
    table = json.loads(text)["architectures"]
    return {name: [(t, dims, dtype) for t, dims, dtype in rows] for name, rows in table.items()}


def plain_names(names: Iterable[str], arch: Architecture) -> dict[str, str]:
    """stored name -> plain state_dict name, for weights in the plain or the legacy layout.

    Weights written before the plain layout carry the wrapper's prefix ("net.",
    "net.1." for a 1-channel torchvision network) and its mean/std buffers; those
    buffers are left out of the map (`legacy_buffers` says whether there are any).
    A file in neither layout maps every name to itself.
    """
    stored = list(names)
    if not set(LEGACY_BUFFERS) <= set(stored):
        return {n: n for n in stored}
    rest = [n for n in stored if n not in LEGACY_BUFFERS]
    prefix = LEGACY_RGB_PREFIX if arch.to_rgb else LEGACY_PREFIX
    if not rest or not all(n.startswith(prefix) for n in rest):
        return {n: n for n in stored}
    return {n: n[len(prefix) :] for n in rest}


def is_legacy(names: Iterable[str], arch: Architecture) -> bool:
    stored = list(names)
    return len(plain_names(stored, arch)) != len(stored)


def describe(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
