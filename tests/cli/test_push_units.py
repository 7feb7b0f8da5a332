"""What `maas push` decides before it talks to anyone: the format from the content, the
architecture document from the flags, and the client's connection from MAAS_* variables."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest

from maas.cli.main import build_parser
from maas.cli.push import architecture_of, normalize_of
from maas.client import AsyncRegistry, Endpoints, Registry
from maas.client.push import detect_format
from maas.common import errors

ENV = {
    "MAAS_REGISTRY_ADDRESS": "reg.example:1234",
    "MAAS_TRAINER_ADDRESS": "tr.example:2345",
    "MAAS_INFERENCE_ADDRESS": "inf.example:3456",
    "MAAS_TOKEN": "t" * 20,
    "MAAS_TIMEOUT": "7",
}


def test_endpoints_and_every_client_constructor_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    ends = Endpoints()
    assert (ends.registry, ends.trainer, ends.inference) == ("reg.example:1234", "tr.example:2345", "inf.example:3456")
    assert ends.token == "t" * 20 and ends.timeout == 7.0
    # an explicit value wins over its variable, and leaves the others to the environment
    assert Endpoints(registry="h:1").registry == "h:1" and Endpoints(registry="h:1").token == "t" * 20
    with Registry() as registry:
        assert registry.aio.config.target == "reg.example:1234"
        assert registry.aio.config.token == "t" * 20
    with Registry("other:99") as registry:
        assert registry.aio.config.target == "other:99" and registry.aio.config.timeout == 7.0

    async def make() -> tuple[str, str | None]:
        client = AsyncRegistry()
        try:
            return client.config.target, client.config.token
        finally:
            await client.close()

    assert asyncio.run(make()) == ("reg.example:1234", "t" * 20)


def _safetensors(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    return path


def test_the_format_comes_from_the_content_not_the_name(tmp_path: Path) -> None:
    # a safetensors file named .onnx is safetensors
    assert detect_format(_safetensors(tmp_path / "weights.onnx")) == "safetensors"
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3])],
    )
    (tmp_path / "model.bin").write_bytes(onnx.helper.make_model(graph).SerializeToString())
    assert detect_format(tmp_path / "model.bin") == "onnx"
    (tmp_path / "notes.onnx").write_text("hello, this is not a model\n")
    with pytest.raises(errors.InvalidArgument):
        detect_format(tmp_path / "notes.onnx")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(errors.InvalidArgument):
        detect_format(tmp_path / "empty.safetensors")


def test_a_torch_save_file_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(errors.InvalidArgument) as info:
        detect_format(tmp_path / "model.pt")
    assert "safetensors" in info.value.message and "ONNX" in info.value.message


def _push_args(*argv: str) -> object:
    return build_parser().parse_args(["push", "m", "w.safetensors", *argv])


def test_the_architecture_document_comes_from_the_flags(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("cat\ndog\n\nbird\n")
    args = _push_args(
        "--architecture",
        "mlp",
        "--arg",
        "num_classes=3",
        "--arg",
        "hidden=[64,32]",
        "--arg",
        "dropout=0.1",
        "--input-shape",
        "1,8,8",
        "--labels",
        str(tmp_path / "labels.txt"),
        "--normalize",
        "0.5:0.25",
    )
    doc = architecture_of(args)  # type: ignore[arg-type]
    assert doc == {
        "name": "mlp",
        "args": {"num_classes": 3, "hidden": [64, 32], "dropout": 0.1},
        "input_shape": [1, 8, 8],
        "labels": ["cat", "dog", "bird"],
        "normalize": {"mean": [0.5], "std": [0.25]},
    }
    (tmp_path / "arch.json").write_text(json.dumps({"name": "resnet18", "args": {"num_classes": 2}}))
    args = _push_args("--architecture-file", str(tmp_path / "arch.json"), "--input-shape", "3,32,32")
    assert architecture_of(args) == {  # type: ignore[arg-type]
        "name": "resnet18",
        "args": {"num_classes": 2},
        "input_shape": [3, 32, 32],
    }


def test_normalize_takes_one_value_or_one_per_channel() -> None:
    assert normalize_of("0.5,0.25") == {"mean": [0.5], "std": [0.25]}
    assert normalize_of("0.485,0.456,0.406:0.229,0.224,0.225") == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    for bad in ("0.5", "a,b", "1,2,3:4,5", "0.5:0"):
        with pytest.raises(errors.InvalidArgument):
            normalize_of(bad)
