"""The built-in catalog of declarative architectures.

A model version stored as safetensors carries only weights; its architecture
is a small JSON document naming a catalog entry and its arguments:

    {"name": "lenet", "args": {"in_channels": 1, "num_classes": 10},
     "input_shape": [1, 8, 8], "normalize": {"mean": [4.88], "std": [6.02]},
     "labels": ["0", "1", ...]}

Nothing in it is executed: the name selects a builder from a fixed table and
every argument is type- and range-checked. The built module wraps the network
with its own input normalization, so clients send raw data. Both the trainer
(to build what it trains) and the inference service (to rebuild what it
serves, loading weights with strict=True) use this module; it needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maas.common.errors import InvalidArgument

MAX_CLASSES = 100_000
MAX_WIDTH = 65_536
MAX_DIM = 4096


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
    extra = sorted(set(args) - allowed)
    if extra:
        raise InvalidArgument(f"architecture.args: {', '.join(extra)} not accepted by '{name}'")


# ------------------------------------------------------------------ networks


class LeNet(nn.Module):
    """The classic CIFAR-10 tutorial CNN, with channels, classes and size adapted."""

    def __init__(self, in_channels: int, num_classes: int, input_size: int, padding: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=padding)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=padding)
        side = ((input_size + 2 * padding - 4) // 2 + 2 * padding - 4) // 2
        if side < 1:
            raise InvalidArgument(f"architecture: input of size {input_size} is too small for lenet")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ToRGB(nn.Module):
    """Repeats a single channel three times for networks built for RGB (no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


class Normalized(nn.Module):
    """The served module: (x - mean) / std, then the network. mean/std are buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


# ------------------------------------------------------------------ builders


def _build_lenet(args: dict[str, Any], shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    _only(args, {"in_channels", "num_classes", "padding"}, "lenet")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise InvalidArgument("architecture.input_shape: lenet takes square images [C, H, W]")
    in_channels = _int(args, "in_channels", shape[0], 1, 64)
    if in_channels != shape[0]:
        raise InvalidArgument("architecture.args.in_channels: differs from input_shape")
    num_classes = _int(args, "num_classes", 10, 1, MAX_CLASSES)
    padding = _int(args, "padding", 0, 0, 8)
    return LeNet(in_channels, num_classes, shape[1], padding), num_classes


def _build_mlp(args: dict[str, Any], shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    _only(args, {"in_features", "hidden", "num_classes", "dropout"}, "mlp")
    flat = math.prod(shape)
    in_features = _int(args, "in_features", flat, 1, MAX_WIDTH * 16)
    if in_features != flat:
        raise InvalidArgument("architecture.args.in_features: differs from the size of input_shape")
    hidden = _int_list(args, "hidden", [128], 16, MAX_WIDTH)
    num_classes = _int(args, "num_classes", 10, 1, MAX_CLASSES)
    dropout = _float(args, "dropout", 0.0, 0.0, 0.9)
    return MLP(in_features, hidden, num_classes, dropout), num_classes


def _torchvision(factory_name: str) -> Callable[[dict[str, Any], tuple[int, ...]], tuple[nn.Module, int]]:
    def build(args: dict[str, Any], shape: tuple[int, ...]) -> tuple[nn.Module, int]:
        import torchvision.models as tvm

        _only(args, {"num_classes", "in_channels"}, factory_name)
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise InvalidArgument(f"architecture.input_shape: {factory_name} takes [1 or 3, H, W] images")
        num_classes = _int(args, "num_classes", 1000, 1, MAX_CLASSES)
        factory = getattr(tvm, factory_name)
        net: nn.Module = factory(weights=None, num_classes=num_classes)
        if shape[0] == 1:
            net = nn.Sequential(ToRGB(), net)
        return net, num_classes

    return build


BUILDERS: dict[str, Callable[[dict[str, Any], tuple[int, ...]], tuple[nn.Module, int]]] = {
    "lenet": _build_lenet,
    "mlp": _build_mlp,
    **{
        name: _torchvision(name)
        for name in (
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
    },
}


def parse(doc: dict[str, Any]) -> Architecture:
    """Validate an architecture document; InvalidArgument names what is wrong."""
    if not isinstance(doc, dict):
        raise InvalidArgument("architecture: must be an object")
    name = doc.get("name")
    if not isinstance(name, str) or name not in BUILDERS:
        raise InvalidArgument(
            f"architecture.name: unknown architecture '{str(name)[:40]}' (known: {', '.join(sorted(BUILDERS))})"
        )
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise InvalidArgument("architecture.args: must be an object")
    raw_shape = doc.get("input_shape")
    if (
        not isinstance(raw_shape, list)
        or not 1 <= len(raw_shape) <= 4
        or not all(isinstance(d, int | float) and float(d).is_integer() and 1 <= d <= MAX_DIM for d in raw_shape)
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
    # Building validates the arguments; the result is dropped here.
    _, num_classes = BUILDERS[name](dict(args), shape)
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


def build(arch: Architecture) -> Normalized:
    """The network for `arch`, wrapped with its input normalization."""
    net, _ = BUILDERS[arch.name](dict(arch.args), arch.input_shape)
    channels = arch.input_shape[0]
    view = [1, channels] + [1] * (len(arch.input_shape) - 1) if len(arch.mean) > 1 else [1]
    mean = torch.tensor(arch.mean or (0.0,), dtype=torch.float32)
    std = torch.tensor(arch.std or (1.0,), dtype=torch.float32)
    return Normalized(net, mean.reshape(view), std.reshape(view))


@dataclass
class CatalogEntry:
    name: str
    kind: str
    notes: str = field(default="")


def entries() -> list[CatalogEntry]:
    out = [
        CatalogEntry("lenet", "cnn", "the CIFAR-10 tutorial CNN; args: in_channels, num_classes, padding"),
        CatalogEntry("mlp", "mlp", "args: hidden (list), num_classes, dropout"),
    ]
    out += [
        CatalogEntry(n, "torchvision", "args: num_classes; no pretrained weights")
        for n in BUILDERS
        if n not in ("lenet", "mlp")
    ]
    return out
