"""Artifacts built with the real libraries, once per session.

torch builds the formats that carry code (pickle, torch.save, TorchScript,
torch.export) and a real ONNX export; the registry under test never imports
torch, it only has to recognize the bytes.
"""

from __future__ import annotations

import gzip
import io
import pickle
import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def torch_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """name -> bytes: every refused kind, plus an ONNX export of the same model."""
    torch = pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("torch-artifacts")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    example = (torch.zeros(2, 4),)
    out: dict[str, bytes] = {}

    out["pickle"] = pickle.dumps({"weight": [1.0, 2.0, 3.0]})
    out["pickle-protocol-0"] = pickle.dumps({"weight": [1.0, 2.0]}, protocol=0)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out["torch-save"] = buf.getvalue()
    out["gzip-pickle"] = gzip.compress(out["pickle"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        script_path = tmp / "model.pt"
        torch.jit.script(model).save(str(script_path))
        out["torchscript"] = script_path.read_bytes()

        export_path = tmp / "model.pt2"
        torch.export.save(torch.export.export(model, example), str(export_path))
        out["torch-export"] = export_path.read_bytes()

        # The TorchScript-based exporter runs offline; the default (dynamo)
        # exporter would need onnxscript, which this environment lacks.
        onnx_path = tmp / "model.onnx"
        torch.onnx.export(model, example, str(onnx_path), dynamo=False, input_names=["input"], output_names=["logits"])
        out["onnx"] = onnx_path.read_bytes()
    return out


CODE_KINDS = ("pickle", "pickle-protocol-0", "torch-save", "gzip-pickle", "torchscript", "torch-export")


@pytest.fixture
def tmp_file(tmp_path: Path):
    """Write bytes to a fresh file and return its path."""
    counter = iter(range(1_000_000))

    def write(data: bytes) -> Path:
        path = tmp_path / f"artifact-{next(counter)}"
        path.write_bytes(data)
        return path

    return write
