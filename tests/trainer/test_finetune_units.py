"""Pretrained weights for the catalog's vision networks: each network's head, freezing, BatchNorm, the checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from maas.common import architectures, catalog
from maas.common.builtin_architectures import TORCHVISION
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.trainer import pretrained_weights as pw
from maas.trainer.jobspec import PretrainedWeights
from maas.trainer.worker import finetune


def arch(name: str, classes: int, shape: tuple[int, ...] = (3, 32, 32), **args: object) -> catalog.Architecture:
    labels = [str(i) for i in range(classes)]
    return architectures.parse(
        {"name": name, "args": {"num_classes": classes, **args}, "input_shape": list(shape), "labels": labels}
    )


@pytest.mark.parametrize("name", [*TORCHVISION, "lenet", "mlp"])
def test_every_vision_network_declares_a_head_that_maps_to_its_classes(name: str) -> None:
    """The head is the module whose outputs are the classes, so a new one is sized to the data set."""
    a = arch(name, 7, (3, 32, 32) if name != "mlp" else (12,), **({"hidden": [16, 8]} if name == "mlp" else {}))
    head = pw.head_of(a)
    table = architectures.expected_tensors(a)
    sized = [n for n, need in table.items() if pw.under(n, head)]
    assert sized and all(table[n].shape[0] == 7 for n in sized), (head, sized)
    # Nothing outside the head depends on the number of classes.
    other = arch(name, 3, (3, 32, 32) if name != "mlp" else (12,), **({"hidden": [16, 8]} if name == "mlp" else {}))
    assert {n: t.shape for n, t in architectures.expected_tensors(other).items() if not pw.under(n, head)} == {
        n: t.shape for n, t in table.items() if not pw.under(n, head)
    }


def test_a_resnet_keeps_its_backbone_and_batchnorm_statistics_when_frozen(tmp_path: Path) -> None:
    source = catalog.build(arch("resnet18", 10, (3, 16, 16)))
    state = catalog.state_dict(source)
    save_file(state, str(tmp_path / "r.safetensors"))
    target = arch("resnet18", 4, (3, 16, 16))
    weights = PretrainedWeights(**pw.resolve({"path": "r.safetensors"}, True, target, tmp_path))
    model = catalog.build(target)
    assert finetune.apply(model, target, weights, True, tmp_path) == {
        "path": "r.safetensors",
        "sha256": weights.sha256,
    }
    trainable = finetune.trainable(model)
    assert [p.shape for p in trainable] == [torch.Size([4, 512]), torch.Size([4])]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16) * 5 + 3), torch.randint(0, 4, (8,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = catalog.state_dict(model)
    for name, tensor in state.items():
        if not name.startswith("fc."):
            assert torch.equal(after[name], tensor), name  # running_mean/var and num_batches_tracked included


def test_without_freezing_every_parameter_trains(tmp_path: Path) -> None:
    save_file(
        catalog.state_dict(catalog.build(arch("lenet", 5, (1, 8, 8), padding=2))), str(tmp_path / "l.safetensors")
    )
    target = arch("lenet", 3, (1, 8, 8), padding=2)
    model = catalog.build(target)
    weights = PretrainedWeights(**pw.resolve({"path": "l.safetensors"}, False, target, tmp_path))
    finetune.apply(model, target, weights, False, tmp_path)
    assert len(finetune.trainable(model)) == len(list(model.parameters()))


def test_a_header_that_does_not_fit_names_the_first_tensor(tmp_path: Path) -> None:
    state = catalog.state_dict(catalog.build(arch("lenet", 5, (1, 8, 8), padding=2)))
    target = arch("lenet", 5, (1, 8, 8), padding=2)
    missing = {k: v for k, v in state.items() if k != "conv2.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(FailedPrecondition, match=r"no tensor 'conv2\.bias'"):
        pw.resolve({"path": "missing.safetensors"}, False, target, tmp_path)
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(FailedPrecondition, match=r"'extra\.weight' is not one of"):
        pw.resolve({"path": "extra.safetensors"}, False, target, tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a header")
    with pytest.raises(FailedPrecondition, match="not a safetensors file"):
        pw.resolve({"path": "junk.safetensors"}, False, target, tmp_path)


def test_files_of_other_kinds_and_names_are_refused(tmp_path: Path) -> None:
    target = arch("lenet", 5, (1, 8, 8), padding=2)
    for name in ("weights.bin", "resnet18.pth"):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(InvalidArgument, match=r"pretrained\.path"):
            pw.resolve({"path": name}, False, target, tmp_path)
    with pytest.raises(FailedPrecondition, match="no file"):
        pw.resolve({"path": "absent.safetensors"}, False, target, tmp_path)
    with pytest.raises(InvalidArgument, match=r"pretrained\.sha256"):
        pw.resolve({"path": "absent.safetensors", "sha256": "F" * 64}, False, target, tmp_path)


def test_a_file_changed_after_submission_is_refused_by_the_worker(tmp_path: Path) -> None:
    target = arch("lenet", 5, (1, 8, 8), padding=2)
    state = catalog.state_dict(catalog.build(target))
    save_file(state, str(tmp_path / "l.safetensors"))
    weights = PretrainedWeights(**pw.resolve({"path": "l.safetensors"}, False, target, tmp_path))
    save_file({k: v + 1 for k, v in state.items()}, str(tmp_path / "l.safetensors"))
    with pytest.raises(FailedPrecondition, match=r"pretrained\.sha256"):
        finetune.apply(catalog.build(target), target, weights, False, tmp_path)
