"""Start a catalog network from the job's pretrained weights: read as data, loaded, head new, backbone frozen.

The file was checked when the job was submitted (`maas.trainer.pretrained_weights`);
here it is checked again - the same path under the data root, the same size
bound, the same sha256 as the resolved spec pins, so a file changed since is
refused - and read: safetensors with the safetensors library, a torchvision
pickle only with `torch.load(weights_only=True)`, which runs no code and
refuses any object but tensors and plain containers. Every tensor but the
classifier head's is loaded into the network; the head keeps its fresh
initialization, sized to the data set's classes.

With `freeze_backbone` only the head's parameters require gradients (the
optimizer is given only those) and the backbone's BatchNorm layers stay in
eval mode, so their running statistics are the file's at the end of training.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maas.common import catalog
from maas.common.digest import sha256_file
from maas.common.errors import FailedPrecondition
from maas.trainer import pretrained_weights as pw
from maas.trainer.jobspec import PretrainedWeights


def apply(
    model: catalog.Normalized,
    arch: catalog.Architecture,
    pretrained: PretrainedWeights | None,
    freeze: bool,
    data_root: Path,
) -> dict[str, str] | None:
    """Load the spec's pretrained weights into `model` (and freeze its backbone if asked).

    Returns what the version's lineage records (the file's path and sha256),
    or None when the job starts from random weights.
    """
    if pretrained is None:
        return None
    head = pw.head_of(arch)
    state = read(data_root, pretrained)
    pw.check_tensors({name: tuple(t.shape) for name, t in state.items()}, arch, head)
    backbone = {name: t for name, t in state.items() if not pw.under(name, head)}
    model.net.load_state_dict(backbone, strict=False)
    if freeze:
        freeze_backbone(model.net, head)
    return {"path": pretrained.path, "sha256": pretrained.sha256}


def read(data_root: Path, pretrained: PretrainedWeights) -> dict[str, torch.Tensor]:
    """The file's tensors, after checking it is still the file the job was resolved with."""
    path = pw.weights_file(data_root, pretrained.path)
    pw.check_digest(path, sha256_file(path), pretrained.sha256)
    if pretrained.format == pw.SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FailedPrecondition(f"{pw.FIELD}.path: not a safetensors file ({str(exc)[:200]})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = _why(exc)
        raise FailedPrecondition(
            f"{pw.FIELD}.path: refused by torch.load(weights_only=True), which reads only tensors: {first[:300]}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise FailedPrecondition(f"{pw.FIELD}.path: the file is not a plain state dict of tensor names to tensors")
    return state


def _why(exc: BaseException) -> str:
    """The line of torch's refusal that names what was refused ("Unsupported global: ..."), colours removed."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line] or [type(exc).__name__]
    return next((line for line in lines if "Unsupported" in line or "WeightsUnpickler" in line), lines[0])


def _stay_in_eval(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_backbone(net: nn.Module, head: str) -> None:
    """Only the head's parameters train; the backbone's BatchNorm layers keep their running statistics."""
    heads = {id(p) for p in net.get_submodule(head).parameters()}
    for p in net.parameters():
        p.requires_grad_(id(p) in heads)
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not pw.under(name, head):
            module.register_forward_pre_hook(_stay_in_eval)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer updates: all of them, or the head's alone with a frozen backbone."""
    return [p for p in model.parameters() if p.requires_grad]
