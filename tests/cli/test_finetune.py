"""Fine-tuning a vision network from a weights file, end to end through `maas train` and the real services.

No pretrained weights are at hand offline, so the test makes its own: LeNet is
trained by the service on digits 0-4 (scikit-learn's 8x8 digits, written as an
image folder under the trainer's data root) and its registered safetensors file
is downloaded into the data root, once as safetensors and once as a torchvision
style `.pth` (a plain state dict saved by torch.save, named with its sha256
prefix). The related task is digits 5-9 from 20 training images a class: the
same network started from those weights must beat it started from random
weights after the same 5 epochs by at least 0.2 validation accuracy (measured:
about 0.75 against chance, 0.2).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.cli.conftest import Suite
from tests.cli.support import Result, assert_one_line_error

pytestmark = pytest.mark.slow

MARGIN = 0.2
TARGET = ("--dataset", "imagefolder", "--dataset-path", "ft/target", "--dataset-arg", "image_size=8")
SAME = ("--model", "lenet", *TARGET, "--validation-split", "0.5", "--batch-size", "32", "--seed", "0")
HEAD = ("fc3.weight", "fc3.bias")


def _image_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / f"d{label}").mkdir(parents=True, exist_ok=True)
        gray = (image * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(gray).convert("RGB").save(folder / f"d{label}" / f"{index:04d}.png")


def _train(suite: Suite, *args: str) -> tuple[Result, dict[str, Any]]:
    """`maas train ... --watch --json`: the result and the last epoch's metrics."""
    result = suite.maas("train", *args, "--max-retries", "0", "--watch", "--json")
    lines = result.json_lines()
    epochs = [e["epoch"] for e in lines[:-1] if "epoch" in e]
    return result, {"result": lines[-1], "metrics": epochs[-1]["metrics"] if epochs else {}}


def _pth(state: dict[str, torch.Tensor], folder: Path, stem: str) -> str:
    """A torchvision-style file: torch.save of a plain state dict, named STEM-<first 8 hex of its sha256>.pth."""
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, folder / f"{stem}-{digest[:8]}.pth")
    return f"{stem}-{digest[:8]}.pth"


@pytest.fixture(scope="module")
def weights(suite: Suite) -> dict[str, Any]:
    """Image folders of digits 0-4 (source) and 5-9 (target, 40 a class), and LeNet pretrained on the source."""
    from sklearn.datasets import load_digits

    root = suite.workdir / "trainer" / "datasets"
    digits = load_digits()
    source = digits.target < 5
    _image_folder(root / "ft" / "source", digits.images[source], digits.target[source])
    rng = np.random.default_rng(1)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(digits.target == c))[:40] for c in range(5, 10)])
    _image_folder(root / "ft" / "target", digits.images[chosen], digits.target[chosen])

    result, final = _train(
        suite,
        *("--model", "lenet", "--dataset", "imagefolder", "--dataset-path", "ft/source"),
        *("--dataset-arg", "image_size=8", "--epochs", "15", "--batch-size", "32", "--seed", "0"),
        *("--register-as", "ft-source"),
    )
    assert result.rc == 0, result.stderr
    assert final["metrics"]["val_accuracy"] >= 0.9, final
    folder = root / "ft" / "weights"
    folder.mkdir()
    got = suite.maas(
        "versions", "download", "ft-source/1", "--format", "safetensors", "-o", str(folder / "lenet.safetensors")
    )
    assert got.rc == 0, got.stderr
    state = load_file(str(folder / "lenet.safetensors"))
    return {"root": root, "state": state, "pth": "ft/weights/" + _pth(state, folder, "lenet")}


def test_fine_tuned_from_weights_beats_random_weights_after_the_same_epochs(
    suite: Suite, weights: dict[str, Any]
) -> None:
    scratch_run, scratch = _train(suite, *SAME, "--epochs", "5")
    tuned_run, tuned = _train(
        suite, *SAME, "--epochs", "5", "--pretrained", "ft/weights/lenet.safetensors", "--register-as", "ft-tuned"
    )
    assert scratch_run.rc == 0 and tuned_run.rc == 0, (scratch_run.stderr, tuned_run.stderr)
    accuracy = tuned["metrics"]["val_accuracy"], scratch["metrics"]["val_accuracy"]
    assert accuracy[0] >= accuracy[1] + MARGIN, accuracy
    # The job and the version's lineage name the file and its sha256.
    digest = hashlib.sha256((weights["root"] / "ft/weights/lenet.safetensors").read_bytes()).hexdigest()
    job = tuned["result"]["job"]
    assert job["spec"]["pretrained"] == {"path": "ft/weights/lenet.safetensors", "sha256": digest}
    shown = suite.maas("versions", "show", "ft-tuned/1", "--json")
    assert shown.json()["lineage"]["pretrained"] == {"path": "ft/weights/lenet.safetensors", "sha256": digest}
    card = suite.maas("versions", "show", "ft-tuned/1").stdout
    assert f"ft/weights/lenet.safetensors (sha256 {digest})" in card


def test_freeze_backbone_trains_only_the_new_head(suite: Suite, weights: dict[str, Any], tmp_path: Path) -> None:
    run, final = _train(
        suite, *SAME, "--epochs", "2", "--pretrained", weights["pth"], "--freeze-backbone", "--register-as", "ft-frozen"
    )
    assert run.rc == 0, run.stderr
    assert final["result"]["job"]["spec"]["freeze_backbone"] is True
    dest = tmp_path / "frozen.safetensors"
    assert suite.maas("versions", "download", "ft-frozen/1", "--format", "safetensors", "-o", str(dest)).rc == 0
    registered, pretrained = load_file(str(dest)), weights["state"]
    assert set(registered) == set(pretrained)
    # Every backbone tensor, BatchNorm-free LeNet's weights and biases, is the file's to the bit; the head is new.
    for name, tensor in pretrained.items():
        if name not in HEAD:
            assert torch.equal(registered[name], tensor), name
    assert not torch.equal(registered["fc3.weight"], pretrained["fc3.weight"])


def test_refused_weights_files(suite: Suite, weights: dict[str, Any]) -> None:
    folder: Path = weights["root"] / "ft" / "weights"
    lenet = ("--model", "lenet", *TARGET, "--epochs", "1")

    escaping = suite.maas("train", *lenet, "--pretrained", "../registry/lenet.safetensors")
    assert_one_line_error(escaping)
    assert escaping.stderr.startswith("maas: invalid argument: pretrained.path"), escaping.stderr

    outside = suite.workdir / "outside.safetensors"
    outside.write_bytes((folder / "lenet.safetensors").read_bytes())
    (folder / "link.safetensors").symlink_to(outside)
    linked = suite.maas("train", *lenet, "--pretrained", "ft/weights/link.safetensors")
    assert_one_line_error(linked)
    assert linked.stderr.startswith("maas: invalid argument: pretrained.path: must stay under the data root")

    (folder / "lenet-00000000.pth").write_bytes((weights["root"] / weights["pth"]).read_bytes())
    mismatch = suite.maas("train", *lenet, "--pretrained", "ft/weights/lenet-00000000.pth")
    assert_one_line_error(mismatch)
    digest = hashlib.sha256((folder / "lenet-00000000.pth").read_bytes()).hexdigest()
    assert mismatch.stderr.startswith("maas: failed precondition: pretrained.path"), mismatch.stderr
    assert "00000000" in mismatch.stderr and digest in mismatch.stderr

    pinned = suite.maas(
        "train", *lenet, "--pretrained", "ft/weights/lenet.safetensors", "--pretrained-sha256", "0" * 64
    )
    assert_one_line_error(pinned)
    assert pinned.stderr.startswith("maas: failed precondition: pretrained.sha256"), pinned.stderr

    # The same file does not fit LeNet on 16-pixel images: fc1 takes another width.
    shapes = suite.maas(
        "train", "--model", "lenet", "--dataset", "fake", "--dataset-arg", "image_size=16",
        "--pretrained", "ft/weights/lenet.safetensors",
    )  # fmt: skip
    assert_one_line_error(shapes)
    assert "tensor 'fc1.weight' has shape [120, 64] in the file" in shapes.stderr, shapes.stderr

    frozen_alone = suite.maas("train", *lenet, "--freeze-backbone")
    assert frozen_alone.stderr.startswith("maas: invalid argument: freeze_backbone"), frozen_alone.stderr


def test_a_pickle_that_is_not_a_plain_state_dict_fails_its_job(suite: Suite, weights: dict[str, Any]) -> None:
    """torch.load(weights_only=True) refuses the object (nothing runs: the marker file is never written)."""
    folder: Path = weights["root"] / "ft" / "weights"
    marker = folder / "ran"
    name = _pth({"fc1.weight": _Runs(str(marker))}, folder, "evil")  # type: ignore[dict-item]
    run, final = _train(suite, "--model", "lenet", *TARGET, "--epochs", "1", "--pretrained", f"ft/weights/{name}")
    assert run.rc == 1, run.stdout
    job = final["result"]["job"]
    assert job["state"] == "JOB_STATE_FAILED", job
    assert job["reason"].startswith("pretrained.path: refused by torch.load(weights_only=True)"), job["reason"]
    assert not marker.exists()

    # A file of the right kind whose tensors do not fit is refused by the worker too, naming the tensor.
    state = dict(weights["state"])
    state["conv2.weight"] = torch.zeros(16, 6, 3, 3)
    bad = _pth(state, folder, "lenet-bad")
    run, final = _train(suite, "--model", "lenet", *TARGET, "--epochs", "1", "--pretrained", f"ft/weights/{bad}")
    assert run.rc == 1 and final["result"]["job"]["reason"].startswith(
        "pretrained: tensor 'conv2.weight' has shape [16, 6, 3, 3] in the file"
    ), final
    assert suite.maas("catalog", "ls").rc == 0  # the services stay up


class _Runs:
    """Unpickling this would call os.system: what weights_only=True must refuse."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_safetensors_file_written_by_hand_is_accepted(suite: Suite, weights: dict[str, Any]) -> None:
    """Any safetensors state dict does, not only a maas version's: here one without a head at all."""
    folder: Path = weights["root"] / "ft" / "weights"
    save_file({k: v for k, v in weights["state"].items() if k not in HEAD}, str(folder / "headless.safetensors"))
    run, final = _train(suite, *SAME, "--epochs", "1", "--pretrained", "ft/weights/headless.safetensors")
    assert run.rc == 0, run.stderr
    assert final["result"]["ok"] is True
