"""The built-in data sets, declared as plugins: digits, cifar10, mnist, fashion_mnist, imagefolder, fake.

maas-trainer registers each under the `maas.datasets` entry point group (see
its pyproject.toml), exactly as an operator's plugin registers its own.
Images are held as uint8 tensors [N, C, H, W], features as float32; files are
read only from under the operator's data root (`DataSource`).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pydantic import Field

from maas.common.errors import FailedPrecondition
from maas.common.plugins import DatasetArgs, DatasetPlugin, DatasetShape, DataSource, LoadedData, LoadOptions
from maas.trainer.datasets import tree_digest

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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


class Digits(DatasetPlugin[DatasetArgs]):
    name = "digits"
    description = "scikit-learn's bundled 8x8 handwritten digits: 1,797 images of pixel values 0-16, offline."
    Args = DatasetArgs

    def describe(self, args: DatasetArgs, source: DataSource) -> DatasetShape:
        return DatasetShape((1, 8, 8), DIGIT_LABELS)

    def load(self, args: DatasetArgs, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        import torch
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return LoadedData(x, torch.tensor(digits.target, dtype=torch.int64))

    def fingerprint(self, args: DatasetArgs, source: DataSource, seed: int) -> str:
        return f"scikit-learn=={metadata.version('scikit-learn')}:digits"


class TorchvisionDataset(DatasetPlugin[DatasetArgs]):
    """A torchvision data set kept under DATA_ROOT/<name> (downloaded there only if the operator allows)."""

    Args = DatasetArgs

    def __init__(
        self, name: str, dataset_class: str, shape: tuple[int, ...], labels: tuple[str, ...], text: str
    ) -> None:
        self.name = name
        self.dataset_class = dataset_class
        self.shape = shape
        self.labels = labels
        self.description = f"{text} (DATA_ROOT/{name}, or downloaded if the operator allows)."

    def describe(self, args: DatasetArgs, source: DataSource) -> DatasetShape:
        return DatasetShape(self.shape, self.labels)

    def load(self, args: DatasetArgs, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        import numpy as np
        import torch
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.dataset_class)
        if self.dataset_class == "CIFAR10" and not options.verify:
            cls = _unverified_cifar10(cls)
        root = source.root / self.name
        try:
            train = cls(root=str(root), train=True, download=options.allow_download)
            test = cls(root=str(root), train=False, download=options.allow_download)
        except RuntimeError as exc:
            raise FailedPrecondition(
                f"data set {self.name} is not under the data root and downloads are off ({exc})"
            ) from exc

        def tensors(ds: Any) -> tuple[Any, Any]:
            data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
            # [N, H, W] grey or [N, H, W, C] colour -> [N, C, H, W]
            data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
            targets = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
            return data.contiguous().to(torch.uint8), targets

        x, y = tensors(train)
        tx, ty = tensors(test)
        return LoadedData(x, y, tx, ty)

    def fingerprint(self, args: DatasetArgs, source: DataSource, seed: int) -> str:
        return f"sha256:{tree_digest(source.root / self.name)}"


# The entry points' objects (services/trainer/pyproject.toml names each).
cifar10 = TorchvisionDataset("cifar10", "CIFAR10", (3, 32, 32), CIFAR10_LABELS, "CIFAR-10: 60,000 32x32 colour images")
mnist = TorchvisionDataset("mnist", "MNIST", (1, 28, 28), DIGIT_LABELS, "MNIST: 70,000 28x28 handwritten digits")
fashion_mnist = TorchvisionDataset(
    "fashion_mnist", "FashionMNIST", (1, 28, 28), FASHION_LABELS, "Fashion-MNIST: 70,000 28x28 clothing images"
)


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


class ImageFolderArgs(DatasetArgs):
    image_size: int = Field(32, ge=4, le=512, description="Side every image is resized to (RGB, square).")


class ImageFolder(DatasetPlugin[ImageFolderArgs]):
    name = "imagefolder"
    description = (
        "A folder under the data root with one sub-folder of images per class (the class names are the labels)."
    )
    Args = ImageFolderArgs
    path = "required"

    def describe(self, args: ImageFolderArgs, source: DataSource) -> DatasetShape:
        folder = source.path
        assert folder is not None  # path = "required"
        if not folder.is_dir():
            raise FailedPrecondition(f"dataset.path: no folder '{source.relative}' under the data root")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 2:
            raise FailedPrecondition(f"dataset.path: '{source.relative}' needs at least two class folders")
        return DatasetShape((3, args.image_size, args.image_size), tuple(classes))

    def load(self, args: ImageFolderArgs, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        import numpy as np
        import torch
        from PIL import Image

        folder = source.path
        assert folder is not None
        size = args.image_size
        images: list[Any] = []
        targets: list[int] = []
        for index, label in enumerate(shape.labels):
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
            raise FailedPrecondition(f"dataset.path: no images under '{source.relative}'")
        return LoadedData(torch.from_numpy(np.stack(images)), torch.tensor(targets, dtype=torch.int64))


class FakeArgs(DatasetArgs):
    num_samples: int = Field(1000, ge=10, le=1_000_000, description="Images generated.")
    num_classes: int = Field(10, ge=2, le=1000, description="Classes; each has its own mean brightness.")
    channels: int = Field(3, ge=1, le=3, description="Channels of each image.")
    image_size: int = Field(32, ge=4, le=512, description="Side of each square image.")


class Fake(DatasetPlugin[FakeArgs]):
    name = "fake"
    description = "Generated images whose class sets their mean brightness: learnable, for smoke tests (seeded)."
    Args = FakeArgs

    def describe(self, args: FakeArgs, source: DataSource) -> DatasetShape:
        labels = tuple(str(i) for i in range(args.num_classes))
        return DatasetShape((args.channels, args.image_size, args.image_size), labels)

    def load(self, args: FakeArgs, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        import torch

        g = torch.Generator().manual_seed(options.seed)
        n, c = args.num_samples, args.num_classes
        y = torch.randint(0, c, (n,), generator=g)
        # Class-dependent mean brightness plus noise: learnable, so smoke runs show progress.
        base = (y.float() / max(1, c - 1) * 160 + 40).reshape(-1, 1, 1, 1)
        noise = torch.randn((n, *shape.input_shape), generator=g) * 30
        x = (base + noise).clamp(0, 255).to(torch.uint8)
        return LoadedData(x, y)

    def fingerprint(self, args: FakeArgs, source: DataSource, seed: int) -> str:
        fields = {**args.model_dump(), "seed": seed}
        return "fake:" + ",".join(f"{key}={fields[key]}" for key in sorted(fields))
