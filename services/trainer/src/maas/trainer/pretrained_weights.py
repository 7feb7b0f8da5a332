"""A vision network's pretrained weights: a file the operator placed under the data root, checked as data.

Two kinds of file are accepted. A safetensors state dict (preferred): its
header names every tensor with its shape, so the names and shapes are checked
against the architecture's parameter table before the job is queued. Or one of
torchvision's published weight files (`resnet18-f37072fd.pth`): a pickle, so
the file must carry the first hex digits of its sha256 in its name, as
torchvision's do, and the worker reads it only with
`torch.load(weights_only=True)`, which runs no code and refuses anything but
tensors and plain containers. The path is relative to the data root
(`safe_path`: never outside it), the file is bounded in size, and its full
sha256 is pinned in the resolved spec, so the worker reads the very bytes that
were checked and the version's lineage names them.

The classifier head (`ArchitecturePlugin.head`) may differ or be missing in the
file: a new head sized to the data set's classes replaces it. Any other tensor
missing, extra or of another shape refuses the file, naming the first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maas.common.architectures import Architecture, describe, expected_tensors
from maas.common.digest import sha256_file
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.common.plugins import TensorNeed, safe_path

FIELD = "pretrained"
MAX_BYTES = 2 * 1024**3
SAFETENSORS = "safetensors"
PICKLE = "pickle"
SHA256 = re.compile(r"[0-9a-f]{64}")
# torchvision's naming: <name>-<at least 8 hex digits of the file's sha256>.pth
PICKLE_NAME = re.compile(r".+-(?P<prefix>[0-9a-f]{8,64})\.(pth|pt)")
# Buffers older files lack; the network keeps its own (BatchNorm's counter).
OPTIONAL_SUFFIXES = (".num_batches_tracked",)


def resolve(
    raw: Mapping[str, Any] | None, freeze_backbone: bool, arch: Architecture, data_root: Path
) -> dict[str, Any] | None:
    """The checked `pretrained` of a job spec ({path, sha256, format}), or None for random weights."""
    raw = raw or {}
    relative, pin = str(raw.get("path") or ""), str(raw.get("sha256") or "")
    if not relative:
        if pin:
            raise InvalidArgument(f"{FIELD}.path: required with {FIELD}.sha256")
        if freeze_backbone:
            raise InvalidArgument("freeze_backbone: needs pretrained.path (there is no backbone to keep)")
        return None
    if pin and not SHA256.fullmatch(pin):
        raise InvalidArgument(f"{FIELD}.sha256: must be 64 lowercase hex digits")
    head = head_of(arch)
    path = weights_file(data_root, relative)
    fmt = file_format(path)
    digest = sha256_file(path)
    check_digest(path, digest, pin)
    if fmt == SAFETENSORS:
        check_tensors(_header_shapes(path), arch, head)
    return {"path": relative, "sha256": digest, "format": fmt}


def head_of(arch: Architecture) -> str:
    """The module path of `arch`'s classifier head; InvalidArgument when its plugin declares none."""
    head = arch.plugin.head(arch.resolved)
    if not isinstance(head, str) or not head:
        raise InvalidArgument(
            f"{FIELD}: architecture {arch.name} ({arch.origin.label}) declares no classifier head, "
            "so it cannot start from pretrained weights"
        )
    return head


def weights_file(data_root: Path, relative: str) -> Path:
    """`relative` under the data root when it is a regular file within the size bound."""
    path = safe_path(data_root, relative, f"{FIELD}.path")
    if not path.is_file():
        raise FailedPrecondition(f"{FIELD}.path: no file '{relative[:200]}' under the data root")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise FailedPrecondition(f"{FIELD}.path: the file has {size} bytes, more than the {MAX_BYTES} allowed")
    return path


def file_format(path: Path) -> str:
    if path.suffix == ".safetensors":
        return SAFETENSORS
    if path.suffix in (".pth", ".pt"):
        if not PICKLE_NAME.fullmatch(path.name):
            raise InvalidArgument(
                f"{FIELD}.path: a .pth file must be named like torchvision's, NAME-<first 8 hex digits of its "
                f"sha256>.pth (e.g. resnet18-f37072fd.pth); '{path.name[:120]}' is not"
            )
        return PICKLE
    raise InvalidArgument(f"{FIELD}.path: a .safetensors state dict or a torchvision .pth weights file")


def check_digest(path: Path, digest: str, pin: str) -> None:
    """FailedPrecondition when the file's sha256 differs from the job's pin or from the prefix in its name."""
    if pin and digest != pin:
        raise FailedPrecondition(f"{FIELD}.sha256: the file's sha256 is {digest}, the job pins {pin}")
    named = PICKLE_NAME.fullmatch(path.name)
    if named and not digest.startswith(named["prefix"]):
        raise FailedPrecondition(
            f"{FIELD}.path: {path.name[:120]} names sha256 prefix {named['prefix']}, but the file's sha256 is {digest}"
        )


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise FailedPrecondition(f"{FIELD}.path: not a safetensors file ({str(exc)[:200]})") from None


def under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def check_tensors(found: Mapping[str, tuple[int, ...]], arch: Architecture, head: str) -> None:
    """FailedPrecondition naming the first tensor that does not fit `arch` (the head's are not compared)."""
    expected: dict[str, TensorNeed] = expected_tensors(arch)
    what = f"architecture {arch.name}"
    for name, need in expected.items():
        if under(name, head):
            continue
        if name not in found:
            if name.endswith(OPTIONAL_SUFFIXES):
                continue
            raise FailedPrecondition(f"{FIELD}: the file has no tensor '{name}', which {what} needs")
        if tuple(found[name]) != tuple(need.shape):
            raise FailedPrecondition(
                f"{FIELD}: tensor '{name}' has shape {describe(found[name])} in the file, "
                f"{what} needs {describe(need.shape)}"
            )
    for name in found:
        if name not in expected and not under(name, head):
            raise FailedPrecondition(f"{FIELD}: the file's tensor '{name[:200]}' is not one of {what}'s")
