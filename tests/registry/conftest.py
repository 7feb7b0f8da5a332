"""Artifacts built with the real libraries, once per session.

torch builds the formats that carry code (pickle, torch.save, TorchScript,
torch.export) and a real ONNX export; the registry under test never imports
torch, it only has to recognize the bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import pickle
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from maas.common.server import RunningServer, start_server
from maas.registry.app import RegistryApp
from maas.v1 import registry_pb2_grpc
from tests.conftest import registry_settings


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


@contextlib.asynccontextmanager
async def serving(
    db_url: str, artifact_root: Path, **overrides: object
) -> AsyncIterator[tuple[RunningServer, registry_pb2_grpc.RegistryServiceStub]]:
    """One more in-process registry (its own settings) and a stub on its own channel."""
    settings = registry_settings(db_url, artifact_root, **overrides)
    running = await start_server(settings, RegistryApp(settings))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            yield running, registry_pb2_grpc.RegistryServiceStub(channel)
    finally:
        await running.stop(0)
