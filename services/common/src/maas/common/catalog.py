"""The built-in catalog of declarative architectures, as torch modules.

Documents are parsed and validated by `maas.common.architectures` (no torch;
the registry uses it too); this module builds what they describe. The built
module wraps the plain network with the document's input normalization (and,
for a torchvision network fed 1-channel images, the repetition to 3 channels),
so clients send raw data. The wrapper holds no weights of its own that are
stored: a version's safetensors file is exactly the plain network's
`state_dict()` (`state_dict(module)` here), and `load_weights` also accepts
the older layout with the wrapper's "net." prefix and mean/std buffers. Both
the trainer (to build what it trains) and the inference service (to rebuild
what it serves, loading weights with strict=True) use this module; it needs
torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from maas.common import architectures
from maas.common.architectures import (
    MAX_CLASSES,
    MAX_DIM,
    MAX_WIDTH,
    Architecture,
    LeNetArgs,
    MLPArgs,
    TorchvisionArgs,
    parse,
)

__all__ = [
    "BUILDERS",
    "MAX_CLASSES",
    "MAX_DIM",
    "MAX_WIDTH",
    "Architecture",
    "Normalized",
    "build",
    "entries",
    "load_weights",
    "parse",
    "state_dict",
]


# ------------------------------------------------------------------ networks


class LeNet(nn.Module):
    """The classic CIFAR-10 tutorial CNN, with channels, classes and size adapted."""

    def __init__(self, in_channels: int, num_classes: int, input_size: int, padding: int) -> None:
        super().__init__()
        side = LeNetArgs(in_channels, num_classes, input_size, padding).side
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=padding)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=padding)
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


class Normalized(nn.Module):
    """The served module: (x - mean) / std, 1 channel repeated to 3 if asked, then the network.

    mean and std are buffers (they move with .to(device) and stay in training
    checkpoints), but the weights a version stores are `self.net`'s alone.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, to_rgb: bool = False) -> None:
        super().__init__()
        self.net = net
        self.to_rgb = to_rgb
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.to_rgb:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


# ------------------------------------------------------------------ builders


def network(arch: Architecture) -> nn.Module:
    """The plain network `arch` names: its state_dict is the stored weights' layout."""
    resolved = architectures.resolve_args(arch)
    if isinstance(resolved, LeNetArgs):
        return LeNet(resolved.in_channels, resolved.num_classes, resolved.input_size, resolved.padding)
    if isinstance(resolved, MLPArgs):
        return MLP(resolved.in_features, list(resolved.hidden), resolved.num_classes, resolved.dropout)
    assert isinstance(resolved, TorchvisionArgs)
    import torchvision.models as tvm

    factory = getattr(tvm, resolved.name)
    net: nn.Module = factory(weights=None, num_classes=resolved.num_classes)
    return net


# Kept for callers that list or look up catalog names.
BUILDERS: dict[str, Callable[[Architecture], nn.Module]] = dict.fromkeys(architectures.NAMES, network)


def build(arch: Architecture) -> Normalized:
    """The network for `arch`, wrapped with its input normalization."""
    channels = arch.input_shape[0]
    view = [1, channels] + [1] * (len(arch.input_shape) - 1) if len(arch.mean) > 1 else [1]
    mean = torch.tensor(arch.mean or (0.0,), dtype=torch.float32)
    std = torch.tensor(arch.std or (1.0,), dtype=torch.float32)
    return Normalized(network(arch), mean.reshape(view), std.reshape(view), arch.to_rgb)


def state_dict(module: Normalized) -> dict[str, torch.Tensor]:
    """The weights to store: the plain network's tensors, contiguous, on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in module.net.state_dict().items()}


def load_weights(module: Normalized, arch: Architecture, state: Mapping[str, torch.Tensor]) -> None:
    """Load stored weights strictly: the plain layout, or the legacy one (wrapper prefix and buffers).

    Legacy files carried their own mean/std buffers, which took precedence over
    the document's normalization when they were loaded; they still do.
    """
    mapping = architectures.plain_names(state, arch)
    module.net.load_state_dict({plain: state[stored] for stored, plain in mapping.items()}, strict=True)
    if len(mapping) != len(state):
        for buffer in architectures.LEGACY_BUFFERS:
            setattr(module, buffer, state[buffer].to(torch.float32).clone())


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
        CatalogEntry(n, "torchvision", "args: num_classes; no pretrained weights") for n in architectures.TORCHVISION
    ]
    return out
