"""A plugin network's parameter table, derived by building it on torch's meta device.

The registry checks uploaded weights against the tensors an architecture's
state_dict holds. A plugin may declare that table without torch
(`ArchitecturePlugin.parameters`); otherwise it is read from the module built
on the meta device (shapes and dtypes, no memory, no initialization work).
torch is imported here, inside the function: it is the plugin's dependency,
not the caller's, and a registry without torch says that it cannot check such
an architecture.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from maas.common.errors import FailedPrecondition
from maas.common.plugins.bounded import within
from maas.common.plugins.interface import ArchitecturePlugin, TensorNeed

SAFETENSORS_DTYPES = {
    "torch.float32": "F32",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.float64": "F64",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


def table(module: Any) -> dict[str, TensorNeed]:
    """name -> shape and safetensors dtype of every tensor of `module.state_dict()`, in order."""
    out = {}
    for key, tensor in module.state_dict().items():
        dtype = SAFETENSORS_DTYPES.get(str(tensor.dtype))
        if dtype is None:
            raise FailedPrecondition(f"tensor {key[:80]} has dtype {tensor.dtype}, which safetensors cannot hold")
        out[key] = TensorNeed(tuple(int(d) for d in tensor.shape), dtype)
    return out


def _materialized(module: Any, input_shape: tuple[int, ...]) -> Any:
    """`module` with its lazy parameters (nn.LazyLinear, ...) given shapes by one forward pass of zeros."""
    import torch
    from torch.nn.parameter import is_lazy

    if any(is_lazy(t) for t in (*module.parameters(), *module.buffers())):
        module.eval()
        with torch.no_grad():
            module(torch.zeros((2, *input_shape)))
    return module


def derive(
    plugin: ArchitecturePlugin[Any], args: Any, num_classes: int, input_shape: tuple[int, ...], seconds: float
) -> dict[str, TensorNeed]:
    """The table of `plugin.build(args, ...)`, built on the meta device (on the CPU if that fails)."""
    if importlib.util.find_spec("torch") is None:
        raise FailedPrecondition(
            f"architecture {plugin.name}: its plugin declares no parameter table and torch is not installed here, "
            "so its weights cannot be checked (give the plugin a parameters() table, or install torch)"
        )

    def build() -> dict[str, TensorNeed]:
        import torch

        try:
            with torch.device("meta"):
                return table(_materialized(plugin.build(args, num_classes, input_shape), input_shape))
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            # Initializers that touch data (copy_, numpy) do not run on meta tensors.
            return table(_materialized(plugin.build(args, num_classes, input_shape), input_shape))

    return within(seconds, f"building architecture {plugin.name} for its parameter table", build)
