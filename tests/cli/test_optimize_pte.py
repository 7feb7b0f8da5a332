"""`maas optimize REF --format pte`: an ExecuTorch program of a READY version, through the real suite.

The session's trained digits MLP gets a .pte exported from its torch weights
(normalization inside, as its ONNX model has it, so both take raw pixels);
what is downloaded runs with executorch.runtime outside maas to the outputs
the inference service answers. Refusals are synchronous and leave nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maas.client.registry import Registry
from maas.client.trainer import Trainer
from maas.common import errors
from maas.v1 import registry_pb2 as rpb
from tests.cli.conftest import Suite
from tests.cli.support import assert_one_line_error
from tests.cli.test_optimize import digits, download, run_onnx, served


def run_pte(path: Path, x: np.ndarray, batch: int = 64) -> np.ndarray:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    rows = torch.from_numpy(x)
    return np.concatenate([method.execute([rows[i : i + batch]])[0].numpy() for i in range(0, len(x), batch)])


def test_pte_from_the_trained_version(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    parent = trained["result"]["version"]
    ref = f"digits/{parent['version']}"
    before = [a["format"] for a in parent["artifacts"]]
    result = suite.maas("optimize", ref, "--format", "pte", "--json")
    assert result.rc == 0, result.stderr
    final = result.json_lines()[-1]
    assert final["ok"], final
    version = final["version"]
    assert version["version"] == parent["version"]  # added to the source itself
    assert [a["format"] for a in version["artifacts"]] == [*before, "MODEL_FORMAT_PTE"]
    diff = float(version["tags"]["pte_max_abs_diff"])
    assert 0 <= diff <= 1e-3
    logs = " ".join(e["log"]["message"] for e in result.json_lines()[:-1] if "log" in e)
    assert "ExecuTorch format" in logs

    edge = download(suite, ref, "pte", tmp_path / "x.pte")
    assert edge.read_bytes()[4:8] == b"ET12"
    base = download(suite, ref, "onnx", tmp_path / "parent.onnx")
    x, y = digits()  # raw pixels 0..16: both files normalize inside, as the served model does
    local = run_pte(edge, x)
    np.testing.assert_allclose(local, run_onnx(base, x), atol=1e-3)
    assert (local.argmax(1) == y).mean() > 0.8

    loaded = suite.maas("serving", "load", ref, "--json")
    assert loaded.rc == 0, loaded.stderr
    rows = x[:32]
    np.testing.assert_allclose(served(suite, ref, rows, tmp_path), local[:32], atol=1e-4)

    again = suite.maas("optimize", ref, "--format", "pte")
    assert_one_line_error(again)  # it has a PTE artifact now: ALREADY_EXISTS, synchronously
    with Trainer(suite.trainer.address) as trainer, pytest.raises(errors.AlreadyExists):
        trainer.optimize(ref, formats=["pte"])


def test_pte_refusals_register_nothing(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    parent = trained["result"]["version"]
    ref = f"digits/{parent['version']}"
    with Registry(suite.registry.address) as registry:
        registry.download("digits", parent["version"], tmp_path / "m.onnx", format="onnx")
        onnx_only = registry.push("digits-onnx", tmp_path / "m.onnx")
        before = sorted(v.version for v in registry.versions("digits"))
    assert [a.format for a in onnx_only.artifacts] == [rpb.MODEL_FORMAT_ONNX]

    with Trainer(suite.trainer.address) as trainer:
        jobs_before = len(list(trainer.jobs()))
        with pytest.raises(errors.InvalidArgument):
            trainer.optimize(ref, quantize="int8", formats=["pte"])
        with pytest.raises(errors.FailedPrecondition):  # no torch weights to export
            trainer.optimize(f"digits-onnx/{onnx_only.version}", formats=["pte"], dataset={"name": "digits"})
        assert len(list(trainer.jobs())) == jobs_before

    both = suite.maas("optimize", ref, "--quantize", "int8", "--format", "pte")
    assert_one_line_error(both)
    with Registry(suite.registry.address) as registry:
        assert sorted(v.version for v in registry.versions("digits")) == before
        (same,) = list(registry.versions("digits-onnx"))
    assert [a.format for a in same.artifacts] == [rpb.MODEL_FORMAT_ONNX]
