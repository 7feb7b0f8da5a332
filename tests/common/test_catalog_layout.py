"""The stored weight layout: the plain network's state_dict, described without torch.

The registry checks uploads against `architectures.expected_tensors` (no
torch); these tests build every catalog entry with torch and compare, so the
table shipped with the catalog can never drift from what the runtimes load.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from maas.common import architectures, catalog  # noqa: E402
from maas.common.errors import InvalidArgument  # noqa: E402

SAFETENSORS_DTYPE = {torch.float32: "F32", torch.int64: "I64"}

DOCS: list[dict[str, Any]] = [
    {
        "name": "lenet",
        "args": {"num_classes": 10, "padding": 2},
        "input_shape": [1, 8, 8],
        "normalize": {"mean": [1], "std": [2]},
    },
    {"name": "lenet", "args": {"in_channels": 3, "num_classes": 7, "padding": 2}, "input_shape": [3, 32, 32]},
    {"name": "mlp", "args": {"hidden": [16, 8], "num_classes": 3}, "input_shape": [1, 4, 4]},
    {"name": "mlp", "args": {"hidden": [5], "num_classes": 2, "dropout": 0.5}, "input_shape": [6]},
    {"name": "mlp", "args": {"hidden": []}, "input_shape": [3]},
    *(
        {"name": name, "args": {"num_classes": classes}, "input_shape": [channels, 32, 32]}
        for name in architectures.TORCHVISION
        for classes, channels in ((10, 1), (1000, 3))
    ),
]


def _label(doc: dict[str, Any]) -> str:
    return f"{doc['name']}-{doc['args'].get('num_classes', 'default')}-{doc['input_shape'][0]}"


@pytest.mark.parametrize("doc", DOCS, ids=_label)
def test_expected_tensors_are_the_built_networks_state_dict(doc: dict[str, Any]) -> None:
    arch = catalog.parse(doc)
    real = catalog.state_dict(catalog.build(arch))
    described = architectures.expected_tensors(arch)
    assert list(described) == list(real)
    for name, tensor in real.items():
        assert described[name] == architectures.TensorNeed(tuple(tensor.shape), SAFETENSORS_DTYPE[tensor.dtype])


def test_plain_torchvision_state_dict_loads_and_normalization_comes_from_the_document() -> None:
    doc = {
        "name": "resnet18",
        "args": {"num_classes": 5},
        "input_shape": [1, 32, 32],
        "normalize": {"mean": [0.5], "std": [0.25]},
    }
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=5).eval()
    module = catalog.build(catalog.parse(doc)).eval()
    catalog.load_weights(module, catalog.parse(doc), plain.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        expected = plain(((x - 0.5) / 0.25).expand(-1, 3, -1, -1))
        assert torch.equal(module(x), expected)
    assert catalog.state_dict(module).keys() == plain.state_dict().keys()


class _LegacyRGB(torch.nn.Module):
    """What catalog.build returned before the plain layout, for a 1-channel torchvision input."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Identity(), net)
        self.register_buffer("mean", torch.tensor([0.1]))
        self.register_buffer("std", torch.tensor([0.2]))


@pytest.mark.parametrize(
    ("doc", "legacy"),
    [
        (
            {"name": "mlp", "args": {"hidden": [8], "num_classes": 3}, "input_shape": [4]},
            lambda net: {
                "mean": torch.tensor([0.1]),
                "std": torch.tensor([0.2]),
                **{f"net.{k}": v for k, v in net.state_dict().items()},
            },
        ),
        (
            {"name": "resnet18", "args": {"num_classes": 4}, "input_shape": [1, 16, 16]},
            lambda net: _LegacyRGB(net).state_dict(),
        ),
    ],
    ids=["mlp", "resnet18-1-channel"],
)
def test_legacy_prefixed_weights_still_load_with_their_own_normalization(doc: dict[str, Any], legacy: Any) -> None:
    arch = catalog.parse(doc)
    torch.manual_seed(1)
    net = catalog.network(arch).eval()
    state = legacy(net)
    assert any(k.startswith("net.") for k in state)
    module = catalog.build(arch).eval()
    catalog.load_weights(module, arch, state)
    x = torch.rand(3, *arch.input_shape)
    with torch.inference_mode():
        normalized = (x - 0.1) / 0.2
        if arch.to_rgb:
            normalized = normalized.expand(-1, 3, -1, -1)
        assert torch.equal(module(x), net(normalized))
    assert architectures.is_legacy(state, arch)


def test_weights_of_another_architecture_are_refused() -> None:
    arch = catalog.parse({"name": "resnet18", "args": {"num_classes": 4}, "input_shape": [3, 16, 16]})
    other = torchvision.models.resnet18(num_classes=5).state_dict()
    with pytest.raises(RuntimeError):
        catalog.load_weights(catalog.build(arch), arch, other)


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "resnet9000", "input_shape": [3, 8, 8]},
        {"name": "resnet18", "args": {"num_classes": 0}, "input_shape": [3, 8, 8]},
        {"name": "resnet18", "args": {"in_channels": 3}, "input_shape": [1, 8, 8]},
        {"name": "lenet", "input_shape": [1, 4, 4]},
        {"name": "mlp", "args": {"depth": 3}, "input_shape": [4]},
        {"name": "mlp", "args": {}},
    ],
)
def test_parse_refuses_what_no_network_can_be_built_for(doc: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        architectures.parse(doc)
