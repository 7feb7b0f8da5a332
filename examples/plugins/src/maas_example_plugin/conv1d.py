"""conv1d: a small 1-D convolutional network for signals of shape [channels, length].

Each block is Conv1d -> BatchNorm1d -> ReLU -> MaxPool1d(2); a global average
over time and a linear head give the logits. The declaration imports no
torch: the arguments are a pydantic model, and `parameters` computes the
state_dict's tensors by formula, so a registry without torch can check an
uploaded version's weights. torch is imported only inside `build`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from maas.common.errors import InvalidArgument
from maas.common.plugins import ArchitectureArgs, ArchitecturePlugin, TensorNeed, TensorSpec

if TYPE_CHECKING:
    from torch import nn


class Conv1dArgs(ArchitectureArgs):
    width: int = Field(16, ge=1, le=512, description="Channels of every convolution.")
    blocks: int = Field(2, ge=1, le=6, description="Convolution blocks; each halves the length.")
    kernel_size: int = Field(5, ge=1, le=31, description="Width of each convolution's kernel (odd).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the linear head.")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd, so the padding keeps the length")
        return value


class Conv1d(ArchitecturePlugin[Conv1dArgs]):
    name = "conv1d"
    description = "A 1-D CNN for [channels, length] signals: convolution blocks, global average pooling, linear."
    Args = Conv1dArgs
    inputs = (TensorSpec("input", "FP32", (-1, -1), "[channels, length] signals"),)

    def check(self, args: Conv1dArgs, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 2:
            raise InvalidArgument("architecture.input_shape: conv1d takes [channels, length] signals")
        if input_shape[1] < 2**args.blocks:
            raise InvalidArgument(
                f"architecture.args.blocks: {args.blocks} blocks need a length of at least {2**args.blocks}"
            )

    def build(self, args: Conv1dArgs, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        from maas_example_plugin.network import Conv1dNet

        return Conv1dNet(input_shape[0], args.width, args.blocks, args.kernel_size, args.dropout, num_classes)

    def parameters(self, args: Conv1dArgs, num_classes: int, input_shape: tuple[int, ...]) -> dict[str, TensorNeed]:
        out: dict[str, TensorNeed] = {}
        channels = input_shape[0]
        for block in range(args.blocks):
            conv, norm = f"features.{4 * block}", f"features.{4 * block + 1}"
            out[f"{conv}.weight"] = TensorNeed((args.width, channels, args.kernel_size))
            out[f"{conv}.bias"] = TensorNeed((args.width,))
            for key in ("weight", "bias", "running_mean", "running_var"):
                out[f"{norm}.{key}"] = TensorNeed((args.width,))
            out[f"{norm}.num_batches_tracked"] = TensorNeed((), "I64")
            channels = args.width
        out["head.weight"] = TensorNeed((num_classes, args.width))
        out["head.bias"] = TensorNeed((num_classes,))
        return out
