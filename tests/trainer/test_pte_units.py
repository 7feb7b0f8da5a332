"""The ExecuTorch edge format in-process: export and check of catalog modules, and the spec's pte rules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from maas.common import catalog
from maas.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from maas.trainer import optimize_spec
from maas.trainer.worker import pte_export

LINEAGE = {"name": "digits", "args": {}, "validation_split": 0.1, "seed": 0}
SOURCE = optimize_spec.Source(
    "digits", 3, True, "READY", False, frozenset({"safetensors", "onnx"}), dataset=LINEAGE, dataset_from="lineage"
)


def module(name: str) -> catalog.Normalized:
    args = {"in_features": 64, "hidden": [32], "num_classes": 10} if name == "mlp" else {"in_channels": 1}
    if name == "lenet":
        args.update(num_classes=10, padding=2)
    arch = catalog.parse(
        {"name": name, "args": args, "input_shape": [1, 8, 8], "normalize": {"mean": [5.0], "std": [6.0]}}
    )
    torch.manual_seed(0)
    return catalog.build(arch).eval()


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_export_runs_every_batch_size_as_torch_does(tmp_path: Path, name: str) -> None:
    net = module(name)
    rows = (np.random.default_rng(0).random((300, 1, 8, 8)) * 16).astype(np.float32)
    result = pte_export.export(net, rows, tmp_path, 1e-3)
    assert result.ok, result.reason
    assert result.checked_rows == pte_export.MAX_CHECK_ROWS and result.max_abs_diff is not None
    assert result.max_abs_diff <= 1e-4
    path = tmp_path / pte_export.FILE
    assert path.read_bytes()[4:8] == b"ET12" and path.stat().st_size == result.size_bytes
    for batch in (1, 5, 16, pte_export.MAX_BATCH, 150):  # above MAX_BATCH: run in chunks
        x = torch.from_numpy(rows[:batch])
        with torch.inference_mode():
            np.testing.assert_allclose(pte_export.run(path, x), net(x).numpy(), atol=1e-4)


def test_over_the_tolerance_nothing_is_written(tmp_path: Path) -> None:
    rows = (np.random.default_rng(1).random((40, 1, 8, 8)) * 16).astype(np.float32)
    result = pte_export.export(module("mlp"), rows, tmp_path, 0.0)
    assert not result.ok and "over the tolerance" in result.reason
    assert list(tmp_path.iterdir()) == []


def test_spec_pte_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument):
        optimize_spec.check({"source": "digits/3", "quantize": "int8", "formats": ["pte"]})
    checked = optimize_spec.check({"source": "digits/3", "formats": ["PTE", "ort", "pte"]})
    assert checked.formats == ("pte", "ort")
    optimize_spec.require_tools(checked)  # executorch is installed here (requirements/dev.txt)
    doc = optimize_spec.resolve(checked, SOURCE, data_root=tmp_path, max_runtime=60)
    assert doc.register_as == "" and doc.optimize is not None and doc.optimize.formats == ("pte", "ort")

    has_pte = optimize_spec.Source(**{**SOURCE.__dict__, "formats": frozenset({"safetensors", "onnx", "pte"})})
    with pytest.raises(AlreadyExists):
        optimize_spec.resolve(checked, has_pte, data_root=tmp_path, max_runtime=60)
    onnx_only = optimize_spec.Source(**{**SOURCE.__dict__, "formats": frozenset({"onnx"})})
    with pytest.raises(FailedPrecondition, match="safetensors"):
        optimize_spec.resolve(checked, onnx_only, data_root=tmp_path, max_runtime=60)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FailedPrecondition, match=r"maas-trainer\[edge\]"):
        optimize_spec.require_tools(checked)
    optimize_spec.require_tools(optimize_spec.check({"source": "digits/3", "formats": ["ort"]}))
