"""Safetensors weights against what their architecture needs, without torch.

Only the file's header is read (8 bytes of length, then a bounded JSON
object naming each tensor's dtype and shape; `formats.check` has already
proved it well-formed and its byte ranges exact). Its tensors must be exactly
the plain network's state_dict that `architectures.expected_tensors` describes,
or the legacy layout with the wrapper's prefix that the runtimes also load.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from maas.common import architectures, errors
from maas.common.architectures import Architecture, describe
from maas.registry.storage.formats import MAX_HEADER_BYTES


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """tensor name -> (dtype, shape), __metadata__ left out."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            raise errors.InvalidArgument(f"weights: header larger than {MAX_HEADER_BYTES} bytes")
        header: dict[str, Any] = json.loads(f.read(length).decode("utf-8"))
    return {
        name: (str(info["dtype"]), tuple(int(d) for d in info["shape"]))
        for name, info in header.items()
        if name != "__metadata__"
    }


def check(path: Path, arch: Architecture) -> None:
    """InvalidArgument naming the first tensor that is missing, extra, or of the wrong shape or dtype."""
    check_tensors(read_header(path), arch)


def check_tensors(stored: dict[str, tuple[str, tuple[int, ...]]], arch: Architecture) -> None:
    need = architectures.expected_tensors(arch)
    legacy = architectures.is_legacy(stored, arch)
    plain = architectures.plain_names(stored, arch)
    found = {plain[name]: info for name, info in stored.items() if name in plain}
    where = f"architecture {arch.name}"
    prefix = architectures.LEGACY_RGB_PREFIX if legacy and arch.to_rgb else architectures.LEGACY_PREFIX
    shown = (lambda n: prefix + n) if legacy else (lambda n: n)
    for name, want in need.items():
        got = found.get(name)
        if got is None:
            raise errors.InvalidArgument(
                f"weights: {where} needs tensor {shown(name)} {describe(want.shape)}, the file has none"
            )
        dtype, shape = got
        if shape != want.shape:
            raise errors.InvalidArgument(
                f"weights: {shown(name)} has shape {describe(shape)}, {where} needs {describe(want.shape)}"
            )
        if dtype != want.dtype:
            raise errors.InvalidArgument(f"weights: {shown(name)} is {dtype}, {where} needs {want.dtype}")
    for name in found:
        if name not in need:
            raise errors.InvalidArgument(f"weights: {shown(name)[:120]} is not a tensor of {where}")
    if legacy:
        for buffer in architectures.LEGACY_BUFFERS:
            dtype, shape = stored[buffer]
            if dtype != "F32" or len(shape) > 4:
                raise errors.InvalidArgument(f"weights: {buffer} is {dtype} {describe(shape)}, needs F32")
