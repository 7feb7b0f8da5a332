"""A plugin that raises, hangs, or returns the wrong shape fails with a clear reason, in process (no service)."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from maas.common import architectures, plugins
from maas.common.errors import FailedPrecondition, InvalidArgument
from tests.plugins.support import write_distribution

SOURCE = """
    import time
    from pydantic import Field
    from maas.common.plugins import (
        ArchitectureArgs, ArchitecturePlugin, DatasetArgs, DatasetPlugin, DatasetShape, LoadedData, TensorNeed,
    )

    class Plain(ArchitecturePlugin[ArchitectureArgs]):
        Args = ArchitectureArgs

        def build(self, args, num_classes, input_shape):
            from torch import nn
            return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], self.outputs(num_classes)))

        def outputs(self, num_classes):
            return num_classes

    class Raising(Plain):
        name = "raising"
        def build(self, args, num_classes, input_shape):
            raise RuntimeError("no such layer: Conv5d")

    class Hanging(Plain):
        name = "hanging"
        def build(self, args, num_classes, input_shape):
            time.sleep(60)

    class WrongShape(Plain):
        name = "wrong_shape"
        def outputs(self, num_classes):
            return num_classes + 1

    class NotAModule(Plain):
        name = "not_a_module"
        def build(self, args, num_classes, input_shape):
            return "a string"

    class Tabular(DatasetPlugin[DatasetArgs]):
        name = "tabular"
        Args = DatasetArgs
        rows = (6,)
        labels = (0, 1, 2, 1)

        def describe(self, args, source):
            return DatasetShape((4,), ("a", "b", "c"))

        def load(self, args, shape, source, options):
            import torch
            return LoadedData(torch.ones((4, *self.rows)), torch.tensor(self.labels))

    class BadLabels(Tabular):
        name = "bad_labels"
        rows = (4,)
        labels = (0, 1, 7, 1)

    class SlowLoad(Tabular):
        name = "slow_load"
        def load(self, args, shape, source, options):
            time.sleep(60)
"""
ARCHS = ("raising", "hanging", "wrong_shape", "not_a_module")
SETS = ("tabular", "bad_labels", "slow_load")


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = f"p{uuid.uuid4().hex[:10]}_isolation"
    write_distribution(
        tmp_path,
        "acme-faulty",
        "0.3",
        modules={module: SOURCE},
        architectures={n: f"{module}:{n.title().replace('_', '')}" for n in ARCHS},
        datasets={n: f"{module}:{n.title().replace('_', '')}" for n in SETS},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MAAS_PLUGINS_TIMEOUT_SECONDS", "1")
    importlib.invalidate_caches()
    plugins.reset()
    yield
    plugins.reset()


def doc(name: str) -> dict[str, object]:
    return {"name": name, "args": {"num_classes": 3}, "input_shape": [4]}


@pytest.mark.usefixtures("installed")
def test_a_network_that_raises_hangs_or_has_the_wrong_shape_is_refused_where_it_is_built() -> None:
    from maas.common import catalog

    expected = {
        "raising": "building architecture raising (acme-faulty 0.3) failed: RuntimeError: no such layer: Conv5d",
        "hanging": "building architecture hanging (acme-faulty 0.3) did not finish within 1 s",
        "wrong_shape": "architecture wrong_shape (acme-faulty 0.3) returned shape [2, 4] for 2 rows of [4]; "
        "it must return [2, 3]",
        "not_a_module": "building architecture not_a_module (acme-faulty 0.3) gave a str, not a torch.nn.Module",
    }
    for name, message in expected.items():
        with pytest.raises(FailedPrecondition) as info:
            catalog.build(catalog.parse(doc(name)))
        assert info.value.message.startswith(message), info.value.message


@pytest.mark.usefixtures("installed")
def test_what_a_data_set_returns_is_checked_against_what_it_declares(tmp_path: Path) -> None:
    from maas.trainer import datasets

    def load(name: str) -> datasets.Loaded:
        info = datasets.describe(name, "", {}, tmp_path)
        return datasets.load(info, tmp_path, allow_download=False, seed=0)

    with pytest.raises(
        FailedPrecondition,
        match=r"data set tabular \(acme-faulty 0.3\) returned rows of shape \[4, 6\]; it declares \[N, 4\]",
    ):
        load("tabular")
    with pytest.raises(
        FailedPrecondition, match=r"data set bad_labels \(acme-faulty 0.3\) returned labels outside \[0, 3\)"
    ):
        load("bad_labels")
    with pytest.raises(
        FailedPrecondition, match=r"loading data set slow_load \(acme-faulty 0.3\) did not finish within 1 s"
    ):
        load("slow_load")
    with pytest.raises(InvalidArgument, match=r"dataset\.path: 'tabular' takes no path"):
        datasets.describe("tabular", "somewhere", {}, tmp_path)
    info = datasets.describe("tabular", "", {}, tmp_path)
    assert info.origin == "acme-faulty 0.3"
    assert datasets.fingerprint(info, tmp_path, 7) == "acme-faulty==0.3:tabular:{},seed=7"


@pytest.mark.usefixtures("installed")
def test_an_entry_the_operator_did_not_allow_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_PLUGINS_ALLOW", "someone-else")
    plugins.reset()
    with pytest.raises(FailedPrecondition, match="'raising' is installed but unavailable: acme-faulty is not in"):
        architectures.parse(doc("raising"))
    with pytest.raises(InvalidArgument, match=r"unknown architecture 'conv9d'.*must be installed beside every service"):
        architectures.parse(doc("conv9d"))
    assert "raising" not in architectures.names() and "mlp" in architectures.names()
