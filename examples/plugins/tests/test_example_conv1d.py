"""conv1d: its torch-free parameter table matches the module, its arguments are checked, and it learns waveforms."""

from __future__ import annotations

import pytest
import torch
from maas_example_plugin.conv1d import Conv1d, Conv1dArgs
from maas_example_plugin.waveforms import WaveformsArgs, generate

from maas.common import architectures, catalog, plugins
from maas.common.errors import InvalidArgument

SAFETENSORS = {torch.float32: "F32", torch.int64: "I64"}


def doc(args: dict[str, object], shape: list[int], classes: int = 4) -> dict[str, object]:
    return {"name": "conv1d", "args": {"num_classes": classes, **args}, "input_shape": shape}


@pytest.mark.parametrize(
    ("args", "shape"),
    [({}, [1, 64]), ({"width": 3, "blocks": 4, "kernel_size": 3}, [2, 16]), ({"blocks": 1, "dropout": 0.2}, [5, 9])],
)
def test_the_declared_parameter_table_is_the_modules_state_dict(args: dict[str, object], shape: list[int]) -> None:
    arch = architectures.parse(doc(args, shape, classes=7))
    real = catalog.network(arch).state_dict()
    table = Conv1d().parameters(arch.resolved, 7, arch.input_shape)
    assert list(table) == list(real)
    assert table == {k: plugins.TensorNeed(tuple(v.shape), SAFETENSORS[v.dtype]) for k, v in real.items()}
    assert architectures.expected_tensors(arch) == table  # what the registry checks uploads against


def test_arguments_that_do_not_fit_are_refused_naming_the_field() -> None:
    for args, shape, field in [
        ({"kernel_size": 4}, [1, 64], "architecture.args.kernel_size: must be odd"),
        ({"blocks": 5}, [1, 16], "architecture.args.blocks: 5 blocks need a length of at least 32"),
        ({}, [1, 8, 8], "architecture.input_shape: conv1d takes [channels, length]"),
        ({"width": 0}, [1, 64], "architecture.args.width: "),
    ]:
        with pytest.raises(InvalidArgument) as info:
            architectures.parse(doc(args, shape))
        assert info.value.message.startswith(field), info.value.message


def test_the_entry_comes_from_this_distribution() -> None:
    entry = plugins.installed().get("architecture", "conv1d")
    assert entry is not None and entry.origin.label == "maas-example-plugin 0.1.0"
    assert isinstance(entry.plugin, Conv1d) and entry.plugin.Args is Conv1dArgs


def test_it_learns_the_waveforms_in_a_few_epochs() -> None:
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in generate(WaveformsArgs(num_samples=1200), seed=3))
    train, val = slice(0, 1000), slice(1000, None)
    arch = architectures.parse(doc({}, [1, 64]))
    model = catalog.build(arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(8):
        order = torch.randperm(1000)
        for start in range(0, 1000, 50):
            idx = order[start : start + 50]
            loss = torch.nn.functional.cross_entropy(model(x[train][idx]), y[train][idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[val]).argmax(1) == y[val]).float().mean())
    assert accuracy >= 0.9, accuracy  # four shapes at noise 0.3: 0.975 here after 8 epochs
