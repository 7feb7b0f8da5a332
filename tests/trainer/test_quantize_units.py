"""quantize_onnx in-process (what a benchmark calls): the method chosen per architecture, what each method
writes, the calibration reader, and an optimization spec's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from maas.common import catalog
from maas.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from maas.trainer import optimize_spec
from maas.trainer.worker import onnx_export, quantize


def exported(tmp_path: Path, name: str) -> tuple[Path, np.ndarray]:
    args = {"in_features": 64, "hidden": [32], "num_classes": 10} if name == "mlp" else {"in_channels": 1}
    if name == "lenet":
        args.update(num_classes=10, padding=2)
    arch = catalog.parse(
        {"name": name, "args": args, "input_shape": [1, 8, 8], "normalize": {"mean": [5.0], "std": [6.0]}}
    )
    torch.manual_seed(0)
    module = catalog.build(arch).eval()
    x = torch.rand(96, 1, 8, 8) * 16
    directory = tmp_path / name
    directory.mkdir()
    assert onnx_export.export(module, arch, x, directory, 1e-3).ok
    return directory / "model.onnx", x.numpy()


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_auto_method_is_static_for_convolutions_and_dynamic_otherwise(tmp_path: Path) -> None:
    mlp, _ = exported(tmp_path, "mlp")
    lenet, _ = exported(tmp_path, "lenet")
    assert quantize.choose_method(mlp) == "dynamic"
    assert quantize.choose_method(lenet) == "static"
    assert quantize.choose_method(lenet, "dynamic") == "dynamic"
    with pytest.raises(ValueError):
        quantize.choose_method(mlp, "int4")


def test_dynamic_and_static_write_smaller_int8_graphs_that_agree(tmp_path: Path) -> None:
    mlp, x = exported(tmp_path, "mlp")
    lenet, _ = exported(tmp_path, "lenet")
    dyn = quantize.quantize_onnx(mlp, tmp_path / "mlp.int8.onnx")
    assert dyn.method == "dynamic" and not dyn.per_channel and dyn.calibration_batches == 0
    assert "MatMulInteger" in ops(dyn.path) and dyn.size_bytes < mlp.stat().st_size

    batches = [x[i : i + 32] for i in range(0, 64, 32)]
    static = quantize.quantize_onnx(lenet, tmp_path / "lenet.int8.onnx", "", batches)
    assert static.method == "static" and static.per_channel and static.calibration_batches == 2
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops(static.path)
    assert static.size_bytes < lenet.stat().st_size
    # Only the operator sets the graph uses (the pre-processor imports every domain it knows).
    assert {o.domain for o in onnx.load(str(static.path)).opset_import} <= {"", "ai.onnx"}

    for src, dst in ((mlp, dyn.path), (lenet, static.path)):
        base = quantize.outputs(quantize.session(src), x)
        int8 = quantize.outputs(quantize.session(dst), x)
        assert (base.argmax(1) == int8.argmax(1)).mean() >= 0.9

    with pytest.raises(ValueError, match="calibration"):
        quantize.quantize_onnx(lenet, tmp_path / "none.onnx", "static", [])


def test_the_ort_file_runs_what_its_onnx_model_does(tmp_path: Path) -> None:
    mlp, x = exported(tmp_path, "mlp")
    dyn = quantize.quantize_onnx(mlp, tmp_path / "mlp.int8.onnx")
    edge = quantize.to_ort(dyn.path, tmp_path / "mlp.ort")
    assert edge.read_bytes()[4:8] == b"ORTM"
    got, want = quantize.outputs(quantize.session(edge), x), quantize.outputs(quantize.session(dyn.path), x)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_calibration_reader_feeds_each_batch_once_per_pass() -> None:
    batches = [np.full((2, 3), i, np.float64) for i in range(3)]
    reader = quantize.BatchReader("input", batches)
    seen = []
    while (feed := reader.get_next()) is not None:
        seen.append(feed["input"])
    assert [b[0, 0] for b in seen] == [0, 1, 2] and all(b.dtype == np.float32 for b in seen)
    reader.rewind()
    assert reader.get_next()["input"][0, 0] == 0  # type: ignore[index]


SOURCE = optimize_spec.Source("digits", 3, True, "READY", False, frozenset({"safetensors", "onnx"}))


def test_optimize_spec_checks_and_resolves(tmp_path: Path) -> None:
    for bad in (
        {"source": "digits/3"},
        {"source": "", "quantize": "int8"},
        {"source": "digits/3", "quantize": "fp16"},
        {"source": "digits/3", "formats": ["ort"], "method": "static"},
        {"source": "digits/3", "formats": ["ort"], "register_as": "x"},
        {"source": "digits/3", "quantize": "int8", "calibration_batches": 5000},
    ):
        with pytest.raises(InvalidArgument):
            optimize_spec.check(bad)
    checked = optimize_spec.check({"source": "digits@production", "quantize": "int8", "formats": ["ort", "ORT"]})
    assert checked.formats == ("ort",) and checked.calibration_batches == 8

    with pytest.raises(FailedPrecondition, match="--dataset"):
        optimize_spec.resolve(checked, SOURCE, data_root=tmp_path, max_runtime=60)
    trained = optimize_spec.dataset_from_run({"dataset.name": "digits", "validation_split": "0.2", "seed": "7"})
    source = optimize_spec.Source(**{**SOURCE.__dict__, "dataset": trained, "dataset_from": "run"})
    doc = optimize_spec.resolve(checked, source, data_root=tmp_path, max_runtime=60)
    assert doc.optimize is not None and doc.optimize.parent.model_dump() == {"model": "digits", "version": 3}
    assert (doc.validation_split, doc.seed, doc.register_as) == (0.2, 7, "digits")

    ort_only = optimize_spec.check({"source": "digits/3", "formats": ["ort"]})
    has_ort = optimize_spec.Source(**{**source.__dict__, "formats": frozenset({"onnx", "ort"})})
    with pytest.raises(AlreadyExists):
        optimize_spec.resolve(ort_only, has_ort, data_root=tmp_path, max_runtime=60)
    assert optimize_spec.resolve(ort_only, source, data_root=tmp_path, max_runtime=60).register_as == ""
