"""A text model's tokenizer.json: checked as data at upload, only ever an additional artifact of a text version.

The registry under test never imports tokenizers; the test builds real
tokenizer files with it (and a small ONNX graph taking token ids with onnx).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from onnx import TensorProto, helper

from maas.registry.storage import formats
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, safetensors_bytes
from tests.registry.test_artifacts import assert_refused, blobs, parts, pending, upload
from tests.registry.test_version_artifacts import download_format, formats_of

TEXT_ARCH = {"task": "text_classification", "text": {"max_length": 16}, "labels": ["neg", "pos"]}


def tokenizer_json(pad: str = "[PAD]") -> bytes:
    """A real WordLevel tokenizer (the tokenizers library's own serialization)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {pad: 0, "[UNK]": 1, "good": 2, "bad": 3, "film": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()


def text_graph(inputs: tuple[str, ...] = ("input_ids", "attention_mask"), id_type: int = TensorProto.INT64) -> bytes:
    """logits [batch, 2] = (sum of the mask, 0): a graph shaped as a text classifier's."""
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f", "axes"], ["count"], keepdims=1),
        helper.make_node("Mul", ["count", "zero"], ["nothing"]),
        helper.make_node("Concat", ["count", "nothing"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "text",
        [
            helper.make_tensor_value_info(name, id_type if name != "attention_mask" else TensorProto.INT64, ["b", "s"])
            for name in inputs
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


async def text_version(
    stub: Any, model: str = "reviews", architecture: dict[str, Any] | None = None
) -> pb.ModelVersion:
    """A PENDING ONNX text version (no declared signature: the registry reads the graph's)."""
    try:
        await stub.CreateModel(pb.CreateModelRequest(name=model))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    request = pb.CreateVersionRequest(model=model, format=pb.MODEL_FORMAT_ONNX)
    request.architecture.update(architecture or TEXT_ARCH)
    return await stub.CreateVersion(request)


def test_a_tokenizer_json_is_recognized_by_content(tmp_path: Path) -> None:
    path = tmp_path / "whatever.bin"
    path.write_bytes(tokenizer_json())
    assert formats.sniff(path).kind == "tokenizer"
    path.write_bytes(b'{"model": {"type": "Neural", "vocab": {}}}')
    sniffed = formats.sniff(path)
    assert sniffed.kind == "unknown" and "model.type" in sniffed.detail


async def test_tokenizer_added_while_pending_then_the_graph_makes_it_ready(stub, artifact_root) -> None:
    v = await text_version(stub)
    data = tokenizer_json()
    added = await upload(stub, "reviews", v.version, data, fmt=pb.MODEL_FORMAT_TOKENIZER)
    assert added.status == pb.VERSION_STATUS_PENDING
    ready = await upload(stub, "reviews", v.version, text_graph())
    assert ready.status == pb.VERSION_STATUS_READY
    assert formats_of(ready) == [pb.MODEL_FORMAT_ONNX, pb.MODEL_FORMAT_TOKENIZER]
    assert [t.name for t in ready.signature.inputs] == ["input_ids", "attention_mask"]
    info, got = await download_format(stub, "reviews", v.version, pb.MODEL_FORMAT_TOKENIZER)
    assert info.format == pb.MODEL_FORMAT_TOKENIZER and got == data
    async with raises_code(grpc.StatusCode.ALREADY_EXISTS):
        await upload(stub, "reviews", v.version, tokenizer_json("<pad>"), fmt=pb.MODEL_FORMAT_TOKENIZER)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x08\x07 not text", "not a tokenizer.json"),
        (b'{"model": "\xff"}', "UTF-8"),
        (b'{"model": ', "JSON"),
        (b"[1, 2]", "not a tokenizer.json"),
        (b'{"version": "1.0"}', "'model'"),
        (b'{"model": {"type": "Neural", "vocab": {"a": 0}}}', "model.type"),
        (b'{"model": {"type": "WordPiece", "vocab": {}}}', "empty"),
        (b'{"model": {"type": "Unigram", "vocab": {"a": 0}}}', "Unigram"),
        (b'{"model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1}}}', "pad token"),
    ],
)
async def test_what_is_not_a_usable_tokenizer_is_refused_naming_the_problem_and_leaves_nothing(
    stub, artifact_root, data: bytes, problem: str
) -> None:
    v = await text_version(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await upload(stub, "reviews", v.version, data, fmt=pb.MODEL_FORMAT_TOKENIZER)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (info.value.details() or ""), info.value.details()
    got = await stub.GetVersion(pb.GetVersionRequest(model="reviews", version=v.version))
    assert got.status == pb.VERSION_STATUS_PENDING and formats_of(got) == []
    assert blobs(artifact_root) == [] and parts(artifact_root) == []


async def test_a_tokenizer_is_refused_for_a_model_that_is_not_a_text_model(stub, artifact_root) -> None:
    v = await pending(stub)  # an MLP's safetensors version
    await upload(stub, "m", v.version, safetensors_bytes(2))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await upload(stub, "m", v.version, tokenizer_json(), fmt=pb.MODEL_FORMAT_TOKENIZER)
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=v.version))
    assert formats_of(got) == [pb.MODEL_FORMAT_SAFETENSORS]
    assert len(blobs(artifact_root)) == 1


async def test_a_tokenizer_is_never_a_version_primary_nor_taken_for_a_model(stub, artifact_root) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="tok"))
    request = pb.CreateVersionRequest(model="tok", format=pb.MODEL_FORMAT_TOKENIZER)
    request.architecture.update(TEXT_ARCH)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(request)
    assert list((await stub.ListVersions(pb.ListVersionsRequest(model="tok"))).versions) == []
    # A tokenizer.json sent as a text version's ONNX model fails that version, saying what it is.
    v = await text_version(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await upload(stub, "reviews", v.version, tokenizer_json())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tokenizer.json" in (info.value.details() or "")
    await assert_refused(stub, artifact_root, "reviews", v.version)


@pytest.mark.parametrize(
    "graph",
    [
        text_graph(("input_ids", "mask", "attention_mask")),
        text_graph(("attention_mask",)),
        text_graph(id_type=TensorProto.INT32),
    ],
    ids=["unknown-input", "no-input-ids", "int32-ids"],
)
async def test_a_text_version_needs_a_graph_that_takes_token_ids(stub, artifact_root, graph: bytes) -> None:
    v = await text_version(stub)
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await upload(stub, "reviews", v.version, graph)
    reason = await assert_refused(stub, artifact_root, "reviews", v.version)
    assert "input_ids" in reason


async def test_token_type_ids_are_an_accepted_third_input(stub, artifact_root) -> None:
    v = await text_version(stub)
    ready = await upload(stub, "reviews", v.version, text_graph(("input_ids", "attention_mask", "token_type_ids")))
    assert ready.status == pb.VERSION_STATUS_READY


@pytest.mark.parametrize(
    "architecture",
    [
        {"task": "text_classification"},
        {"task": "text_classification", "text": {"max_length": 1}},
        {"task": "text_classification", "text": {"max_length": "64"}},
        {"task": "text_classification", "text": {"max_length": 100_000}},
    ],
)
async def test_a_text_architecture_needs_a_bounded_max_length(stub, architecture: dict[str, Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await text_version(stub, architecture=architecture)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "architecture.text" in (info.value.details() or "")


def test_the_test_tokenizer_is_what_tokenizers_writes() -> None:
    doc = json.loads(tokenizer_json())
    assert doc["model"]["type"] == "WordLevel" and "[PAD]" in doc["model"]["vocab"]
