"""Unit tests of maas.registry.storage.formats: recognition by content alone."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from safetensors.numpy import save as save_safetensors

from maas.common import errors
from maas.registry.entities import ModelFormat
from maas.registry.storage import formats
from tests.helpers import raw_safetensors
from tests.registry.conftest import CODE_KINDS


def onnx_bytes() -> bytes:
    """A tiny ONNX graph (y = x @ W) built with onnx's own helpers."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], np.ones(12, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def header_of(tensors: dict[str, dict[str, object]], pad_to: int = 0) -> bytes:
    raw = json.dumps(tensors).encode()
    return raw + b" " * max(0, pad_to - len(raw))


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def refused(path, declared: ModelFormat, trusted: bool = False) -> None:
    with pytest.raises(errors.InvalidArgument):
        formats.check(path, declared, trusted)


def test_real_safetensors_and_onnx(tmp_file) -> None:
    weights = tmp_file(save_safetensors({"a": np.zeros((3, 5), np.float32), "b": np.arange(7, dtype=np.int64)}))
    assert formats.sniff(weights).kind == "safetensors"
    formats.check(weights, ModelFormat.SAFETENSORS, False)
    refused(weights, ModelFormat.ONNX)

    model = tmp_file(onnx_bytes())
    assert formats.sniff(model).kind == "onnx"
    formats.check(model, ModelFormat.ONNX, False)
    refused(model, ModelFormat.SAFETENSORS)


def test_torch_onnx_export_is_onnx(tmp_file, torch_artifacts) -> None:
    path = tmp_file(torch_artifacts["onnx"])
    assert formats.sniff(path).kind == "onnx"
    formats.check(path, ModelFormat.ONNX, False)


@pytest.mark.parametrize("header_len", [640, 896, 1152, 1408, 65536 + 640])
def test_safetensors_whose_length_bytes_look_like_a_pickle_header(tmp_file, header_len: int) -> None:
    # 640 = 0x280: the file starts 0x80 0x02, a pickle's PROTO opcode.
    header = header_of({"w": tensor("F32", [2], 0, 8)}, pad_to=header_len)
    path = tmp_file(raw_safetensors(header, b"\x00" * 8))
    assert path.read_bytes()[0] == 0x80
    assert formats.sniff(path).kind == "safetensors"
    formats.check(path, ModelFormat.SAFETENSORS, False)


def test_safetensors_edge_cases_that_are_valid(tmp_file) -> None:
    empty = tmp_file(raw_safetensors(b"{}"))
    formats.check(empty, ModelFormat.SAFETENSORS, False)
    with_metadata = header_of({"__metadata__": {"format": "pt"}, "w": tensor("BF16", [2, 0], 0, 0)})
    formats.check(tmp_file(raw_safetensors(with_metadata)), ModelFormat.SAFETENSORS, False)
    scalar = header_of({"s": tensor("F64", [], 0, 8)})
    formats.check(tmp_file(raw_safetensors(scalar, b"\x00" * 8)), ModelFormat.SAFETENSORS, False)


MALFORMED_SAFETENSORS = {
    "too short": raw_safetensors(b"{}")[:9],
    "header length past the file": raw_safetensors(header_of({"w": tensor("F32", [1], 0, 4)}), b"\x00" * 4, 10_000),
    "header length zero": raw_safetensors(b"", b"", 0) + b"\x00" * 8,
    "header length enormous": struct.pack("<Q", 2**63) + b"{}" + b"\x00" * 8,
    "header not JSON": raw_safetensors(b"{not json}"),
    "header a JSON array": raw_safetensors(b"[1, 2]"),
    "header not UTF-8": raw_safetensors(b'{"\xff": 1}'),
    "overlapping offsets": raw_safetensors(
        header_of({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}), b"\x00" * 12
    ),
    "a hole between tensors": raw_safetensors(
        header_of({"a": tensor("F32", [1], 0, 4), "b": tensor("F32", [1], 8, 12)}), b"\x00" * 12
    ),
    "bytes past the last tensor": raw_safetensors(header_of({"a": tensor("F32", [1], 0, 4)}), b"\x00" * 8),
    "offsets past the data": raw_safetensors(header_of({"a": tensor("F32", [4], 0, 16)}), b"\x00" * 8),
    "offsets reversed": raw_safetensors(header_of({"a": tensor("F32", [0], 4, 0)}), b"\x00" * 4),
    "shape does not match offsets": raw_safetensors(header_of({"a": tensor("F32", [3], 0, 8)}), b"\x00" * 8),
    "huge shape": raw_safetensors(header_of({"a": tensor("F32", [2**40, 2**40, 2**40], 0, 8)}), b"\x00" * 8),
    "huge shape that overflows int64": raw_safetensors(
        header_of({"a": tensor("U8", [2**32, 2**32, 2**32, 2**32], 0, 0)})
    ),
    "negative dimension": raw_safetensors(header_of({"a": tensor("F32", [-1], 0, 4)}), b"\x00" * 4),
    "unknown dtype": raw_safetensors(header_of({"a": tensor("F31", [1], 0, 4)}), b"\x00" * 4),
    "offsets not a pair": raw_safetensors(
        json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}).encode(), b"\x00" * 4
    ),
    "tensor not an object": raw_safetensors(b'{"a": 3}'),
    "metadata not strings": raw_safetensors(json.dumps({"__metadata__": {"n": 1}}).encode()),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_SAFETENSORS))
def test_malformed_safetensors_is_refused(tmp_file, case: str) -> None:
    path = tmp_file(MALFORMED_SAFETENSORS[case])
    assert formats.sniff(path).kind != "safetensors"
    refused(path, ModelFormat.SAFETENSORS)
    refused(path, ModelFormat.SAFETENSORS, trusted=True)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_of_every_protocol(tmp_file, protocol: int) -> None:
    path = tmp_file(pickle.dumps({"w": [1.0, 2.0], "n": "x"}, protocol=protocol))
    assert formats.sniff(path).kind == "pickle"
    refused(path, ModelFormat.SAFETENSORS)
    refused(path, ModelFormat.ONNX)
    refused(path, ModelFormat.PICKLE)  # carries code: only when trusted
    formats.check(path, ModelFormat.PICKLE, True)


EXPECTED_KIND = {
    "pickle": "pickle",
    "pickle-protocol-0": "pickle",
    "torch-save": "torch-zip",
    "gzip-pickle": "gzip",
    "torchscript": "torchscript",
    "torch-export": "torch-export",
}


@pytest.mark.parametrize("kind", CODE_KINDS)
def test_formats_that_carry_code_are_recognized_and_refused(tmp_file, torch_artifacts, kind: str) -> None:
    path = tmp_file(torch_artifacts[kind])
    assert formats.sniff(path).kind == EXPECTED_KIND[kind]
    for declared in ModelFormat:
        refused(path, declared)
    # Trusting code formats does not make them weights.
    refused(path, ModelFormat.SAFETENSORS, trusted=True)
    refused(path, ModelFormat.ONNX, trusted=True)


def test_trusted_formats_accept_only_their_own_kind(tmp_file, torch_artifacts) -> None:
    script = tmp_file(torch_artifacts["torchscript"])
    exported = tmp_file(torch_artifacts["torch-export"])
    saved = tmp_file(torch_artifacts["torch-save"])
    formats.check(script, ModelFormat.TORCHSCRIPT, True)
    formats.check(exported, ModelFormat.TORCH_EXPORT, True)
    formats.check(saved, ModelFormat.PICKLE, True)
    refused(script, ModelFormat.TORCH_EXPORT, trusted=True)
    refused(exported, ModelFormat.TORCHSCRIPT, trusted=True)
    refused(saved, ModelFormat.TORCHSCRIPT, trusted=True)


def _zip_of_weights() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("weights.bin", b"\x00" * 16)
    return buf.getvalue()


OTHER_CONTENT = {
    "zip": _zip_of_weights(),
    "broken zip": b"PK\x03\x04" + b"\xff" * 60,
    "gzip": gzip.compress(b"anything"),
    "random": np.random.default_rng(0).bytes(4096),
    "text": b"hello, this is not a model\n",
    "truncated onnx": onnx_bytes()[:40],
}


@pytest.mark.parametrize("case", sorted(OTHER_CONTENT))
def test_other_containers_and_garbage_are_refused_as_anything(tmp_file, case: str) -> None:
    path = tmp_file(OTHER_CONTENT[case])
    for declared in ModelFormat:
        refused(path, declared, trusted=True)


def test_onnx_with_a_wrong_wire_type_is_refused(tmp_file) -> None:
    # Field 7 (graph) sent as a varint instead of a message.
    path = tmp_file(b"\x08\x08" + b"\x38\x01")
    assert formats.sniff(path).kind == "unknown"
    refused(path, ModelFormat.ONNX)
