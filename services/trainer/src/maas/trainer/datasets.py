"""The data set catalog: what each data set is, and how to load it into memory.

Small data sets are held as in-memory tensors (uint8 images or float32
features) and shuffled by index; nothing goes through a per-sample
DataLoader. Files are only ever read from under the operator's data root;
a client names a data set and, for image folders, a path relative to that
root which must not escape it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from maas.common.digest import sha256_file
from maas.common.errors import FailedPrecondition, InvalidArgument, some_of

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_LABELS = tuple(str(i) for i in range(10))
NAMES = ("digits", "cifar10", "mnist", "fashion_mnist", "imagefolder", "fake")
PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    labels: tuple[str, ...]
    args: dict[str, Any]
    path: str = ""


def _arg_int(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = args.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"dataset.args.{key}: must be an integer in [{lo}, {hi}]")
    return value


def _only(args: dict[str, Any], allowed: set[str], name: str) -> None:
    extra = set(args) - allowed
    if extra:
        raise InvalidArgument(f"dataset.args: {some_of(extra)} not accepted by '{name}'")


def safe_path(data_root: Path, relative: str) -> Path:
    """`relative` under `data_root`, refusing anything that could leave it."""
    if not relative or len(relative) > 1024 or "\x00" in relative or "\\" in relative or "%" in relative:
        raise InvalidArgument("dataset.path: must be a plain relative path under the data root")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or not all(PATH_PART.fullmatch(part) for part in pure.parts):
        raise InvalidArgument("dataset.path: folder names of letters, digits, '_', '.', '-' under the data root")
    root = data_root.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(root):
        raise InvalidArgument("dataset.path: must stay under the data root")
    return target


def describe(name: str, path: str, args: dict[str, Any], data_root: Path) -> DatasetInfo:
    """Validate a data set reference and say what it yields (shape, classes)."""
    if name not in NAMES:
        raise InvalidArgument(f"dataset.name: unknown data set '{name[:40]}' (known: {', '.join(NAMES)})")
    if path and name != "imagefolder":
        raise InvalidArgument(f"dataset.path: only imagefolder takes a path, not '{name}'")
    if name == "digits":
        _only(args, set(), name)
        return DatasetInfo(name, (1, 8, 8), 10, DIGIT_LABELS, {})
    if name == "cifar10":
        _only(args, set(), name)
        return DatasetInfo(name, (3, 32, 32), 10, CIFAR10_LABELS, {})
    if name in ("mnist", "fashion_mnist"):
        _only(args, set(), name)
        labels = DIGIT_LABELS if name == "mnist" else FASHION_LABELS
        return DatasetInfo(name, (1, 28, 28), 10, labels, {})
    if name == "fake":
        _only(args, {"num_samples", "num_classes", "channels", "image_size"}, name)
        resolved = {
            "num_samples": _arg_int(args, "num_samples", 1000, 10, 1_000_000),
            "num_classes": _arg_int(args, "num_classes", 10, 2, 1000),
            "channels": _arg_int(args, "channels", 3, 1, 3),
            "image_size": _arg_int(args, "image_size", 32, 4, 512),
        }
        shape = (resolved["channels"], resolved["image_size"], resolved["image_size"])
        labels = tuple(str(i) for i in range(resolved["num_classes"]))
        return DatasetInfo(name, shape, resolved["num_classes"], labels, resolved)
    # imagefolder
    _only(args, {"image_size"}, name)
    if not path:
        raise InvalidArgument("dataset.path: imagefolder needs a folder relative to the data root")
    folder = safe_path(data_root, path)
    if not folder.is_dir():
        raise FailedPrecondition(f"dataset.path: no folder '{path}' under the data root")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise FailedPrecondition(f"dataset.path: '{path}' needs at least two class folders")
    size = _arg_int(args, "image_size", 32, 4, 512)
    return DatasetInfo(name, (3, size, size), len(classes), tuple(classes), {"image_size": size}, path)


@dataclass
class Loaded:
    """Training and (optional) test tensors, raw values as clients will send them."""

    x: Any  # torch.Tensor [N, *input_shape], uint8 or float32
    y: Any  # torch.Tensor [N] int64
    test_x: Any | None = None
    test_y: Any | None = None


def load(info: DatasetInfo, data_root: Path, *, allow_download: bool, seed: int, verify: bool = True) -> Loaded:
    import numpy as np
    import torch

    if info.name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return Loaded(x, torch.tensor(digits.target, dtype=torch.int64))
    if info.name == "fake":
        g = torch.Generator().manual_seed(seed)
        n, c = info.args["num_samples"], info.num_classes
        y = torch.randint(0, c, (n,), generator=g)
        # Class-dependent mean brightness plus noise: learnable, so smoke runs show progress.
        base = (y.float() / max(1, c - 1) * 160 + 40).reshape(-1, 1, 1, 1)
        noise = torch.randn((n, *info.input_shape), generator=g) * 30
        x = (base + noise).clamp(0, 255).to(torch.uint8)
        return Loaded(x, y)
    if info.name == "imagefolder":
        return _load_imagefolder(info, data_root)
    import torchvision.datasets as tvd

    cls: Any = {"cifar10": tvd.CIFAR10, "mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[info.name]
    if info.name == "cifar10" and not verify:
        cls = _unverified_cifar10(tvd.CIFAR10)
    root = data_root / info.name
    try:
        train = cls(root=str(root), train=True, download=allow_download)
        test = cls(root=str(root), train=False, download=allow_download)
    except RuntimeError as exc:
        raise FailedPrecondition(
            f"data set {info.name} is not under the data root and downloads are off ({exc})"
        ) from exc

    def tensors(ds: Any) -> tuple[Any, Any]:
        data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
        # [N, H, W] grey or [N, H, W, C] colour -> [N, C, H, W]
        data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        targets = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        return data.contiguous().to(torch.uint8), targets

    x, y = tensors(train)
    tx, ty = tensors(test)
    return Loaded(x, y, tx, ty)


def _unverified_cifar10(base: Any) -> Any:
    """CIFAR10 that accepts files other than the published ones (the operator's choice).

    torchvision checks the files' md5 against the official release; that
    check is also what keeps an arbitrary pickle in the data root from being
    loaded, so it is switched off only by MAAS_TRAINER_VERIFY_DATASETS=false.
    """

    class LocalCIFAR10(base):  # type: ignore[misc, valid-type]
        # torchvision skips the md5 comparison for entries whose checksum is None.
        train_list = [(name, None) for name, _ in base.train_list]
        test_list = [(name, None) for name, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return LocalCIFAR10


def _load_imagefolder(info: DatasetInfo, data_root: Path) -> Loaded:
    import numpy as np
    import torch
    from PIL import Image

    folder = safe_path(data_root, info.path)
    size = info.input_shape[1]
    images: list[Any] = []
    targets: list[int] = []
    for index, label in enumerate(info.labels):
        class_dir = folder / label  # a name read from the operator's own folder
        if not class_dir.resolve().is_relative_to(folder):
            continue
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                continue
            if not file.resolve().is_relative_to(folder):
                continue  # a link pointing out of the folder is ignored
            with Image.open(file) as img:
                rgb = img.convert("RGB").resize((size, size))
                images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy())
            targets.append(index)
    if not images:
        raise FailedPrecondition(f"dataset.path: no images under '{info.path}'")
    return Loaded(torch.from_numpy(np.stack(images)), torch.tensor(targets, dtype=torch.int64))


def fingerprint(info: DatasetInfo, data_root: Path, seed: int) -> str:
    """What identifies the data a job read, for its version's lineage.

    A data set a package ships is that package's version ("scikit-learn==1.5.2:digits");
    generated data is its generator's arguments and seed ("fake:channels=3,...,seed=0");
    files (an image folder, a downloaded cifar10/mnist under the data root) are
    "sha256:<hex>" over their relative paths and contents (`tree_digest`).
    """
    if info.name == "digits":
        return f"scikit-learn=={metadata.version('scikit-learn')}:digits"
    if info.name == "fake":
        fields = {**info.args, "seed": seed}
        return "fake:" + ",".join(f"{key}={fields[key]}" for key in sorted(fields))
    folder = safe_path(data_root, info.path) if info.name == "imagefolder" else data_root / info.name
    return f"sha256:{tree_digest(folder)}"


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
