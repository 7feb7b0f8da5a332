"""`maas push` and `maas.client.log_model` against the real suite: models built outside maas
are registered, served by the inference service and answer what they compute here.

The inference service is called with tritonclient (as any OIP client would); nothing in
this process imports maas.oip (tritonclient registers the same protobuf symbols).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tc

from maas.client import AsyncRegistry, Endpoints, Registry, errors, log_model
from maas.v1 import registry_pb2 as rpb
from tests.cli.conftest import Suite
from tests.cli.support import assert_one_line_error

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow

CLASSES = 4
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(3)
    return torchvision.models.resnet18(num_classes=CLASSES).eval()


@pytest.fixture
def registry(suite: Suite) -> Iterator[Registry]:
    with Registry(Endpoints(registry=suite.registry.address, timeout=30).channel("registry")) as client:
        yield client


def infer(suite: Suite, model: str, x: np.ndarray, input_name: str = "input", output_name: str = "logits") -> Any:
    loaded = suite.maas("serving", "load", model, "--json")
    assert loaded.rc == 0, loaded.stderr
    tensor = tc.InferInput(input_name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client = tc.InferenceServerClient(suite.inference.address)
    try:
        return client.infer(model, [tensor]).as_numpy(output_name)
    finally:
        client.close()


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def test_push_an_onnx_resnet_then_serve_it(suite: Suite, resnet: torch.nn.Module, tmp_path: Path) -> None:
    path = export_onnx(resnet, torch.zeros(1, 3, 32, 32), tmp_path / "resnet.onnx")
    (tmp_path / "labels.txt").write_text("".join(f"class-{i}\n" for i in range(CLASSES)))
    pushed = suite.maas(
        "push",
        "resnet-onnx",
        str(path),
        "--labels",
        str(tmp_path / "labels.txt"),
        "--description",
        "a resnet from elsewhere",
        "--tag",
        "source=test",
        "--promote",
        "production",
        "--json",
    )
    assert pushed.rc == 0, pushed.stderr
    version = pushed.json()
    assert version["status"] == "VERSION_STATUS_READY"
    assert version["format"] == "MODEL_FORMAT_ONNX"
    assert version["aliases"] == ["production"]
    assert version["tags"] == {"source": "test"} and version["description"] == "a resnet from elsewhere"
    assert version["architecture"]["labels"] == [f"class-{i}" for i in range(CLASSES)]
    assert version["signature"]["inputs"][0]["shape"] == [-1, 3, 32, 32]
    shown = suite.maas("versions", "show", "resnet-onnx@production", "--json").json()
    assert shown["version"] == version["version"] and shown["sha256"] == version["sha256"]

    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    got = infer(suite, "resnet-onnx", x)
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert got.shape == (3, CLASSES)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_push_a_plain_resnet_state_dict_as_safetensors_then_serve_it(
    suite: Suite, resnet: torch.nn.Module, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    save_file(resnet.state_dict(), tmp_path / "resnet.safetensors")
    normalize = ",".join(map(str, MEAN)) + ":" + ",".join(map(str, STD))
    pushed = suite.maas(
        "push",
        "resnet-st",
        str(tmp_path / "resnet.safetensors"),
        "--architecture",
        "resnet18",
        "--arg",
        f"num_classes={CLASSES}",
        "--input-shape",
        "3,32,32",
        "--normalize",
        normalize,
        "--promote",
        "production",
        "--json",
    )
    assert pushed.rc == 0, pushed.stderr
    version = pushed.json()
    assert version["status"] == "VERSION_STATUS_READY" and version["format"] == "MODEL_FORMAT_SAFETENSORS"
    assert version["architecture"]["normalize"] == {"mean": list(MEAN), "std": list(STD)}

    x = np.random.default_rng(2).random((2, 3, 32, 32), dtype=np.float32)
    got = infer(suite, "resnet-st", x)
    with torch.inference_mode():
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        expected = resnet((torch.from_numpy(x) - mean) / std).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_push_a_catalog_mlp_from_an_architecture_file_with_its_run(
    suite: Suite, registry: Registry, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from maas.common import catalog

    doc = {"name": "mlp", "args": {"in_features": 64, "hidden": [16], "num_classes": 3}, "input_shape": [1, 8, 8]}
    torch.manual_seed(0)
    net = catalog.network(catalog.parse(doc)).eval()
    save_file(net.state_dict(), tmp_path / "mlp.safetensors")
    import json

    (tmp_path / "arch.json").write_text(json.dumps(doc))
    run = registry._runner.run(registry.aio.create_run(name="elsewhere"))
    pushed = suite.maas(
        "push", "mlp-file", str(tmp_path / "mlp.safetensors"), "--architecture-file", str(tmp_path / "arch.json"),
        "--run", run.run_id, "--json",
    )  # fmt: skip
    assert pushed.rc == 0, pushed.stderr
    assert pushed.json()["run_id"] == run.run_id
    # without --json: one line naming the version
    again = suite.maas(
        "push", "mlp-file", str(tmp_path / "mlp.safetensors"), "--architecture-file", str(tmp_path / "arch.json")
    )
    assert again.rc == 0, again.stderr
    assert "mlp-file/2" in again.stdout and "READY" in again.stdout


def test_a_file_that_is_no_model_is_refused_before_anything_is_created(suite: Suite, tmp_path: Path) -> None:
    (tmp_path / "notes.onnx").write_text("these are my notes, not a model\n")
    result = suite.maas("push", "not-a-model", str(tmp_path / "notes.onnx"))
    assert_one_line_error(result)
    assert "neither ONNX nor safetensors" in result.stderr
    assert suite.maas("models", "show", "not-a-model").rc != 0  # no model, no version
    missing = suite.maas("push", "not-a-model", str(tmp_path / "nothing-here.onnx"))
    assert_one_line_error(missing)
    # safetensors without an architecture is refused locally too
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    bare = suite.maas("push", "not-a-model", str(tmp_path / "w.safetensors"))
    assert_one_line_error(bare)
    assert "--architecture" in bare.stderr
    assert suite.maas("models", "show", "not-a-model").rc != 0


def test_weights_the_registry_refuses_leave_a_failed_version_and_say_why(
    suite: Suite, resnet: torch.nn.Module, registry: Registry, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    save_file(resnet.state_dict(), tmp_path / "resnet.safetensors")
    result = suite.maas(
        "push", "resnet-wrong", str(tmp_path / "resnet.safetensors"), "--architecture", "resnet18",
        "--arg", f"num_classes={CLASSES + 1}", "--input-shape", "3,32,32",
    )  # fmt: skip
    assert_one_line_error(result)
    assert "fc.weight" in result.stderr and "resnet-wrong/1" in result.stderr
    (version,) = registry.versions("resnet-wrong")
    assert version.status == rpb.VERSION_STATUS_FAILED
    assert "fc.weight" in version.status_reason


def test_an_upload_that_stops_midway_leaves_the_version_failed_not_pending(
    suite: Suite, resnet: torch.nn.Module, registry: Registry, tmp_path: Path
) -> None:
    path = export_onnx(resnet, torch.zeros(1, 3, 32, 32), tmp_path / "resnet.onnx")

    async def push_and_cancel() -> None:
        async with AsyncRegistry(Endpoints(registry=suite.registry.address).channel("registry")) as client:
            sending = asyncio.Event()
            task = asyncio.create_task(
                client.push("resnet-stopped", path, progress=lambda sent, _: sent and sending.set())
            )
            await sending.wait()  # the first megabyte is on its way
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(push_and_cancel())
    (version,) = registry.versions("resnet-stopped")
    assert version.status == rpb.VERSION_STATUS_FAILED
    assert version.status_reason == "upload interrupted"

    def refuse(sent: int, total: int) -> None:
        if sent:
            raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError):
        registry.push("resnet-stopped", path, progress=refuse)
    latest = registry.versions("resnet-stopped")[0]
    assert latest.version == 2 and latest.status == rpb.VERSION_STATUS_FAILED


class Classifier(torch.nn.Module):
    """A small transformer over a sequence of 6 tokens of width 16."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def test_log_model_exports_a_transformer_checks_it_and_serves_it(suite: Suite, registry: Registry) -> None:
    torch.manual_seed(5)
    module = Classifier().eval()
    version = log_model(
        "transformer",
        module,
        torch.randn(2, 6, 16),
        labels=["a", "b", "c"],
        description="logged from a notebook",
        promote="production",
        registry=registry,
    )
    assert version.status == rpb.VERSION_STATUS_READY and version.format == rpb.MODEL_FORMAT_ONNX
    assert list(version.aliases) == ["production"]
    assert list(version.signature.inputs[0].shape) == [-1, 6, 16]
    assert version.metrics["onnx_max_abs_diff"] < 1e-4

    x = np.random.default_rng(4).standard_normal((5, 6, 16)).astype(np.float32)  # another batch size
    got = infer(suite, "transformer", x)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


class Drifting(torch.nn.Module):
    """Computes something else every call: no export of it can match it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * float(self.calls)


def test_log_model_refuses_an_export_that_computes_something_else(registry: Registry) -> None:
    with pytest.raises(errors.FailedPrecondition) as info:
        log_model("drifting", Drifting(), torch.ones(2, 3), registry=registry)
    assert "differ" in info.value.message
    with pytest.raises(errors.NotFound):
        registry.get_model("drifting")
