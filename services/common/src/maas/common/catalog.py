"""The catalog's architectures as torch modules: built, wrapped with their normalization, loaded.

Documents are parsed and validated by `maas.common.architectures` (no torch;
the registry uses it too); this module builds what they describe through the
entry's plugin (the built-in ones are plugins too), with a time limit, and
checks that the network answers a batch with one row of `num_classes` logits.
The built module wraps the plain network with the document's input
normalization (and, for a torchvision network fed 1-channel images, the
repetition to 3 channels), so clients send raw data. The wrapper holds no
weights of its own that are stored: a version's safetensors file is exactly the
plain network's `state_dict()` (`state_dict(module)` here), and `load_weights`
also accepts the older layout with the wrapper's "net." prefix and mean/std
buffers. Both the trainer (to build what it trains) and the inference service
(to rebuild what it serves, loading weights with strict=True) use this module;
it needs torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from maas.common import architectures, plugins
from maas.common.architectures import MAX_CLASSES, MAX_DIM, MAX_WIDTH, Architecture, parse
from maas.common.errors import FailedPrecondition

__all__ = [
    "MAX_CLASSES",
    "MAX_DIM",
    "MAX_WIDTH",
    "Architecture",
    "Normalized",
    "build",
    "load_weights",
    "network",
    "parse",
    "state_dict",
]

CHECK_ROWS = 2


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
    """The plain network `arch` names, built by its plugin: its state_dict is the stored weights' layout."""
    plugin, what = arch.plugin, f"architecture {arch.name} ({arch.origin.label})"
    net = plugins.within(
        plugins.timeout(), f"building {what}", lambda: plugin.build(arch.resolved, arch.num_classes, arch.input_shape)
    )
    if not isinstance(net, nn.Module):
        raise FailedPrecondition(f"building {what} gave a {type(net).__name__}, not a torch.nn.Module")
    return net


def build(arch: Architecture) -> Normalized:
    """The network for `arch`, wrapped with its input normalization."""
    channels = arch.input_shape[0]
    view = [1, channels] + [1] * (len(arch.input_shape) - 1) if len(arch.mean) > 1 else [1]
    mean = torch.tensor(arch.mean or (0.0,), dtype=torch.float32)
    std = torch.tensor(arch.std or (1.0,), dtype=torch.float32)
    module = Normalized(network(arch), mean.reshape(view), std.reshape(view), arch.to_rgb)
    check_output(module, arch)
    return module


def check_output(module: nn.Module, arch: Architecture) -> None:
    """FailedPrecondition unless `module` answers a batch of zeros with [rows, num_classes] logits.

    A plugin's network that returns another shape would train on nonsense or
    fail inside a served batch; it is refused where it is built instead. Only
    single-input networks can be fed here.
    """
    inputs = arch.signature()["inputs"]
    if len(inputs) != 1 or inputs[0]["datatype"] != "FP32":
        return
    what = f"architecture {arch.name} ({arch.origin.label})"
    zeros = torch.zeros((CHECK_ROWS, *arch.input_shape))
    was_training = module.training

    def forward() -> tuple[int, ...]:
        module.eval()
        try:
            with torch.no_grad():
                out = module(zeros)
        finally:
            module.train(was_training)
        if not isinstance(out, torch.Tensor):
            raise FailedPrecondition(f"{what} returned a {type(out).__name__}, not a tensor of logits")
        return tuple(out.shape)

    shape = plugins.within(plugins.timeout(), f"running {what} on {CHECK_ROWS} rows", forward)
    if shape != (CHECK_ROWS, arch.num_classes):
        want = architectures.describe((CHECK_ROWS, arch.num_classes))
        raise FailedPrecondition(
            f"{what} returned shape {architectures.describe(shape)} for {CHECK_ROWS} rows of "
            f"{architectures.describe(arch.input_shape)}; it must return {want}"
        )


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
