"""A version with safetensors weights and an ONNX export: the service serves the preferred one.

One registry process; an inference process per setting of
MAAS_INFERENCE_PREFERRED_FORMAT. ModelMetadata's platform says which runtime
serves the version, and both answer what the torch module computes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc

from maas.common.clients.registry import BlockingRegistryClient
from maas.v1 import registry_pb2 as rpb
from tests.inference import support


def _add_onnx(registry: BlockingRegistryClient, model: str, version: int, module: object) -> None:
    """The trainer's export of `module` (checked against it), uploaded beside its weights."""
    torch = pytest.importorskip("torch")
    from maas.common import catalog
    from maas.trainer.worker import onnx_export

    arch = catalog.parse(support.MLP_ARCH)
    with tempfile.TemporaryDirectory() as tmp:
        result = onnx_export.export(module, arch, torch.rand(16, 64), Path(tmp), onnx_export.DEFAULT_TOLERANCE)  # type: ignore[arg-type]
        assert result.ok, result.reason
        registry.upload_artifact(model, version, Path(tmp) / onnx_export.FILE, format=rpb.MODEL_FORMAT_ONNX)


def _platform_and_outputs(address: str, x: np.ndarray) -> tuple[str, np.ndarray]:
    client = tc.InferenceServerClient(address)
    try:
        platform = client.get_model_metadata("both").platform
        request = tc.InferInput("input", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        answer = client.infer("both", [request])
        return platform, answer.as_numpy("logits")
    finally:
        client.close()


def test_onnx_served_when_preferred_and_safetensors_otherwise(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient
) -> None:
    version, module = support.register_torch(registry, "both", support.MLP_ARCH, seed=5, alias=None)
    _add_onnx(registry, "both", version, module)
    registry.set_alias("both", "production", version)
    held = registry.get_version("both", version)
    assert [a.format for a in held.artifacts] == [rpb.MODEL_FORMAT_SAFETENSORS, rpb.MODEL_FORMAT_ONNX]

    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    expected = support.expected(module, x, 1)
    seen: dict[str, str] = {}
    for preferred in ("", "onnx", "safetensors"):
        settings = {"preferred_format": preferred} if preferred else {}
        proc = support.start_inference(
            registry_process.address, workdir / f"inference-{preferred or 'default'}", models="both", **settings
        )
        try:
            platform, got = _platform_and_outputs(proc.address, x)
        finally:
            proc.stop()
        seen[preferred or "default"] = platform
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert seen == {"default": "onnxruntime_onnx", "onnx": "onnxruntime_onnx", "safetensors": "pytorch"}


def test_a_version_without_onnx_is_served_from_safetensors(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient
) -> None:
    support.register_torch(registry, "plain", support.MLP_ARCH, seed=6)
    proc = support.start_inference(registry_process.address, workdir / "inference-plain", models="plain")
    try:
        client = tc.InferenceServerClient(proc.address)
        try:
            assert client.get_model_metadata("plain").platform == "pytorch"
        finally:
            client.close()
    finally:
        proc.stop()
