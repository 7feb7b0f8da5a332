"""Checkpoints as one safetensors file: tensors plus a JSON skeleton, no pickle.

Model, optimizer and scheduler state, RNG state and the loop's position are
flattened: every tensor goes into the safetensors body under a generated key,
everything else (numbers, strings, nesting, dict key types) into a JSON
document kept in the file's metadata. Loading never unpickles anything. The
file is written to a temporary name, fsynced and renamed, so a crash leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

FILE = "checkpoint.safetensors"


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__t": key}
    if isinstance(value, dict):
        return {"__d": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple": [_flatten(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_flatten(v, tensors) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__t" in value:
            return tensors[value["__t"]]
        if "__d" in value:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in value["__d"]}
        if "__tuple" in value:
            return tuple(_unflatten(v, tensors) for v in value["__tuple"])
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def save(directory: Path, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    data = save_bytes(tensors, metadata={"state": json.dumps(skeleton)})
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / FILE
    tmp = directory / f".{FILE}.tmp"
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(directory: Path) -> dict[str, Any] | None:
    path = directory / FILE
    if not path.exists():
        return None
    data = path.read_bytes()
    tensors = load_bytes(data)
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    state = _unflatten(json.loads(metadata["state"]), tensors)
    assert isinstance(state, dict)
    return state
