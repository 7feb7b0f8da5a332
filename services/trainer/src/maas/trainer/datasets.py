"""The data sets a job can name: looked up in the installed catalog, described, loaded, fingerprinted.

Every data set is a plugin found through the `maas.datasets` entry points
(the built-in ones in `maas.trainer.builtin_datasets` are registered the same
way). Small data sets are held as in-memory tensors (uint8 images or float32
features) and shuffled by index; nothing goes through a per-sample
DataLoader. Files are only ever read from under the operator's data root; a
client names a data set and, where it takes one, a path relative to that root
which must not escape it. A plugin's describe and load run bounded in time,
and what a load returns is checked against what the data set declared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.common import plugins
from maas.common.digest import sha256_file
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.common.plugins import DataSource, LoadedData, LoadOptions, safe_path

MAX_DIM = 4096
MAX_LABEL_CHARS = 200
Loaded = LoadedData  # what `load` returns: x, y and the optional test split
__all__ = ["DatasetInfo", "Loaded", "describe", "fingerprint", "load", "safe_path", "split", "tree_digest"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    labels: tuple[str, ...]
    args: dict[str, Any]
    path: str = ""
    origin: str = field(default="built-in", compare=False)


def _entry(name: str) -> plugins.Entry:
    catalog = plugins.installed()
    entry = catalog.get("dataset", name)
    if entry is not None:
        return entry
    refusal = catalog.refusal("dataset", name[:40])
    if refusal:
        raise FailedPrecondition(f"dataset.name: '{name[:40]}' is installed but unavailable: {refusal}")
    known = ", ".join(catalog.names("dataset"))
    raise InvalidArgument(f"dataset.name: unknown data set '{name[:40]}' (known: {known})")


def _what(entry: plugins.Entry) -> str:
    return f"data set {entry.name} ({entry.origin.label})"


def _declared(entry: plugins.Entry, shape: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The declared row shape and labels, refused (FailedPrecondition) when they are malformed."""
    what = _what(entry)
    if not isinstance(shape, plugins.DatasetShape):
        raise FailedPrecondition(f"{what}: describe() must return a DatasetShape")
    dims = tuple(shape.input_shape)
    if not 1 <= len(dims) <= 4 or not all(isinstance(d, int) and 1 <= d <= MAX_DIM for d in dims):
        raise FailedPrecondition(f"{what}: its input shape must be 1-4 dimensions in [1, {MAX_DIM}]")
    labels = tuple(shape.labels)
    if not 2 <= len(labels) <= plugins.MAX_CLASSES or not all(
        isinstance(label, str) and len(label) <= MAX_LABEL_CHARS for label in labels
    ):
        raise FailedPrecondition(f"{what}: it needs 2 to {plugins.MAX_CLASSES} labels of at most 200 characters")
    return dims, labels


def describe(name: str, path: str, args: dict[str, Any], data_root: Path) -> DatasetInfo:
    """Validate a data set reference and say what it yields (shape, classes)."""
    entry = _entry(name)
    plugin = entry.plugin
    if path and plugin.path == "none":
        raise InvalidArgument(f"dataset.path: '{name}' takes no path")
    if not path and plugin.path == "required":
        raise InvalidArgument(f"dataset.path: {name} needs a file or folder relative to the data root")
    source = DataSource(data_root, path)
    if path:
        safe_path(data_root, path)
    resolved = plugins.validate(plugin.Args, args, "dataset.args", name, {})
    shape = plugins.within(plugins.timeout(), f"describing {_what(entry)}", lambda: plugin.describe(resolved, source))
    dims, labels = _declared(entry, shape)
    return DatasetInfo(name, dims, len(labels), labels, resolved.model_dump(mode="json"), path, entry.origin.label)


def load(info: DatasetInfo, data_root: Path, *, allow_download: bool, seed: int, verify: bool = True) -> Loaded:
    """The data set's rows in memory, checked against its declared shape and classes."""
    entry = _entry(info.name)
    plugin = entry.plugin
    resolved = plugins.validate(plugin.Args, info.args, "dataset.args", info.name, {})
    shape = plugins.DatasetShape(info.input_shape, info.labels)
    source = DataSource(data_root, info.path)
    options = LoadOptions(seed, allow_download, verify)
    data = plugins.within(
        plugins.timeout(), f"loading {_what(entry)}", lambda: plugin.load(resolved, shape, source, options)
    )
    if not isinstance(data, LoadedData):
        raise FailedPrecondition(f"{_what(entry)}: load() must return a LoadedData")
    x, y = _rows(entry, info, data.x, data.y, "")
    if data.test_x is None or data.test_y is None:
        return Loaded(x, y)
    tx, ty = _rows(entry, info, data.test_x, data.test_y, "test ")
    return Loaded(x, y, tx, ty)


def _rows(entry: plugins.Entry, info: DatasetInfo, x: Any, y: Any, which: str) -> tuple[Any, Any]:
    """x as uint8 or float32 [N, *input_shape] and y as int64 [N] in [0, num_classes), or FailedPrecondition."""
    import torch

    what = _what(entry)
    try:
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FailedPrecondition(
            f"{what} returned {which}rows that are not tensors ({plugins.bounded.reason(exc)})"
        ) from None
    if tuple(x.shape[1:]) != info.input_shape or len(x) == 0:
        declared = ", ".join(map(str, info.input_shape))
        raise FailedPrecondition(f"{what} returned {which}rows of shape {list(x.shape)}; it declares [N, {declared}]")
    if x.dtype != torch.uint8:
        if not (x.dtype.is_floating_point or x.dtype in (torch.int16, torch.int32, torch.int64, torch.int8)):
            raise FailedPrecondition(f"{what} returned {which}rows of dtype {x.dtype}; numbers are needed")
        x = x.to(torch.float32)
    if y.shape != (len(x),) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise FailedPrecondition(
            f"{what} returned {which}labels of shape {list(y.shape)} {y.dtype}; one integer per row is needed"
        )
    y = y.to(torch.int64)
    if int(y.min()) < 0 or int(y.max()) >= info.num_classes:
        raise FailedPrecondition(f"{what} returned {which}labels outside [0, {info.num_classes})")
    return x.contiguous(), y.contiguous()


def fingerprint(info: DatasetInfo, data_root: Path, seed: int) -> str:
    """What identifies the data a job read, for its version's lineage.

    Each data set may say (a package's bundled set: "scikit-learn==1.5.2:digits";
    generated data: "fake:channels=3,...,seed=0"). Otherwise: files under a path
    are "sha256:<hex>" over their relative paths and contents (`tree_digest`), and
    data without a path is "<distribution>==<version>:<name>:<arguments>,seed=N".
    """
    entry = _entry(info.name)
    plugin = entry.plugin
    resolved = plugins.validate(plugin.Args, info.args, "dataset.args", info.name, {})
    source = DataSource(data_root, info.path)
    found = plugins.within(
        plugins.timeout(), f"fingerprinting {_what(entry)}", lambda: plugin.fingerprint(resolved, source, seed)
    )
    if found is not None:
        return str(found)[:256]
    if source.path is not None:
        target = source.path
        return f"sha256:{sha256_file(target) if target.is_file() else tree_digest(target)}"
    args = json.dumps(info.args, sort_keys=True, separators=(",", ":"))
    return f"{entry.origin.distribution}=={entry.origin.version}:{info.name}:{args},seed={seed}"[:256]


def tree_digest(folder: Path) -> str:
    """Hex sha256 over every file under `folder`, sorted by relative path.

    Each file adds the line "<relative posix path> NUL <hex sha256 of its bytes> LF",
    so a renamed, added, removed or changed file changes the digest; files are
    read in chunks (hashlib.file_digest), and links leading out of the folder
    are left out, as the loaders leave them out.
    """
    root = folder.resolve()
    files: list[tuple[str, Path]] = []
    for current, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            path = Path(current) / name
            if path.is_file() and path.resolve().is_relative_to(root):
                files.append((path.relative_to(root).as_posix(), path))
    outer = hashlib.sha256()
    for relative, path in sorted(files):
        outer.update(os.fsencode(relative) + b"\0" + sha256_file(path).encode() + b"\n")
    return outer.hexdigest()


def split(n: int, fraction: float, seed: int) -> tuple[Any, Any]:
    """Seeded train/validation index split."""
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, math.floor(n * fraction)) if fraction > 0 else 0
    return perm[n_val:], perm[:n_val]
