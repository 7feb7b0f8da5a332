"""A text model's BYTES input, in-process: decoding and bounds in validation, tokenization inside the batcher.

Raw BYTES contents are built with tritonclient's own serializer (4-byte
little-endian length, then the bytes, element after element), so the layout
checked here is the one tritonclient sends. The batcher tests run a real
BERT (tests.inference.text_support) behind its real tokenizer, holding the
first execution on a gate so that the next requests are merged into one.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from maas.common import errors
from maas.common.errors import InvalidArgument
from maas.inference import runtimes, text_runtime
from maas.inference.batcher import Batcher, BatchPolicy
from maas.inference.domain import InferRequest, InputTensor
from maas.inference.tensors import Signature, TensorSpec
from maas.inference.validation import Limits, parse
from tests.inference import text_support

TEXT_SIG = Signature((TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("logits", "FP32", (-1, 2)),))
IMAGE_SIG = Signature((TensorSpec("input", "FP32", (-1, 4)),), (TensorSpec("logits", "FP32", (-1, 2)),))
LIMITS = Limits(max_batch_size=8, max_elements=10_000, max_strings=4, max_string_bytes=32)
STRINGS = ["great film", "", "naïve café ☕", "bad"]
# Tolerance on logits between a text alone and merged with others (README: "Serving text models").
TOLERANCE = 1e-4


def raw_bytes(values: list[Any]) -> bytes:
    return bytes(serialize_byte_tensor(np.array(values, dtype=object)).item())


def text_request(data: bytes | None = None, shape: tuple[int, ...] = (4,), contents: Any = None) -> InferRequest:
    raw = [data] if data is not None else []
    return InferRequest("m", "", "", [InputTensor("text", "BYTES", shape, contents)], raw, [])


def refused(request: InferRequest, signature: Signature = TEXT_SIG) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse(request, signature, LIMITS)
    return info.value.message


def test_raw_bytes_as_tritonclient_sends_them_are_decoded_in_order() -> None:
    parsed = parse(text_request(raw_bytes(STRINGS)), TEXT_SIG, LIMITS)
    assert parsed.rows == 4 and parsed.arrays[0].dtype == object
    assert parsed.arrays[0].tolist() == STRINGS


def test_typed_bytes_contents_are_decoded_the_same() -> None:
    contents = [s.encode() for s in STRINGS]
    parsed = parse(text_request(contents=contents), TEXT_SIG, LIMITS)
    assert parsed.arrays[0].tolist() == STRINGS


@pytest.mark.parametrize("as_raw", [True, False])
def test_invalid_utf8_is_refused_naming_the_input_and_element(as_raw: bool) -> None:
    values = [b"fine", b"caf\xe9", b"ok", b"ok"]  # Latin-1, not UTF-8
    request = text_request(raw_bytes(values)) if as_raw else text_request(contents=values)
    message = refused(request)
    assert "input 'text'" in message and "element 1" in message and "UTF-8" in message


def test_strings_past_the_bounds_are_refused_before_decoding() -> None:
    assert "more than 32" in refused(text_request(raw_bytes(["x" * 33, "a", "b", "c"])))
    assert "more than the 4" in refused(text_request(raw_bytes(["a"] * 5), shape=(5,)))
    assert "more than 32" in refused(text_request(contents=[b"y" * 40, b"a", b"b", b"c"]))


@pytest.mark.parametrize(
    "data",
    [
        raw_bytes(STRINGS)[:-1],  # the last string cut short
        raw_bytes(STRINGS[:3]),  # one string missing
        raw_bytes(STRINGS) + b"\x00",  # a byte after the last string
        struct.pack("<I", 1_000_000) + b"abc",  # a length past the end
    ],
    ids=["cut", "missing", "trailing", "length-past-end"],
)
def test_raw_contents_that_do_not_hold_the_declared_strings_are_refused(data: bytes) -> None:
    assert "input 'text'" in refused(text_request(data))


def test_bytes_to_an_image_model_and_fp32_to_a_text_model_are_refused_by_datatype() -> None:
    to_image = InferRequest("m", "", "", [InputTensor("input", "BYTES", (1, 4), None)], [raw_bytes(["a"] * 4)], [])
    assert "datatype BYTES, expected FP32" in refused(to_image, IMAGE_SIG)
    to_text = InferRequest("m", "", "", [InputTensor("text", "FP32", (4,), None)], [bytes(16)], [])
    assert "datatype FP32, expected BYTES" in refused(to_text)


# ------------------------------------------------------------ the batcher


@dataclass
class TextModel:
    onnx: Path
    tokenizer: Path
    runtime: text_runtime.TextRuntime
    signature: Signature


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextModel]:
    work = tmp_path_factory.mktemp("text-model")
    tokenizer = text_support.train_tokenizer()
    tokenizer_path = work / "tokenizer.json"
    tokenizer_path.write_text(tokenizer.to_str())
    onnx = text_support.export_bert(work / "bert.onnx", tokenizer.get_vocab_size())
    runtime, signature = text_runtime.load(
        onnx, tokenizer_path, text_support.MAX_LENGTH, None, runtimes.RuntimeOptions("cpu", 1)
    )
    text_runtime.warm_up(runtime, signature, text_support.MAX_LENGTH)
    yield TextModel(onnx, tokenizer_path, runtime, signature)
    runtime.close()


class Gated:
    """The runtime's run, held on a gate; records each execution's input shape and where tokenization ran."""

    def __init__(self, runtime: text_runtime.TextRuntime) -> None:
        self.runtime = runtime
        self.gate = threading.Event()
        self.shapes: list[tuple[int, ...]] = []
        self.prepared_on: list[str] = []
        self.started: asyncio.Queue[None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def prepare(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.prepared_on.append(threading.current_thread().name)
        return self.runtime.prepare(inputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self._loop.call_soon_threadsafe(self.started.put_nowait, None)
        assert self.gate.wait(10), "the test never opened the gate"
        self.shapes.append(tuple(inputs[0].shape))
        return self.runtime.run(inputs)


def strings(*texts: str) -> list[np.ndarray]:
    return [np.array(texts, dtype=object)]


def test_the_served_signature_is_one_bytes_input(text_model: TextModel) -> None:
    assert text_model.signature.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    assert text_model.signature.outputs == (TensorSpec("logits", "FP32", (-1, 2)),)
    assert text_model.signature.batched


async def test_requests_of_very_different_lengths_merged_into_one_batch_agree_with_each_alone(
    text_model: TextModel,
) -> None:
    texts = text_support.TEXTS
    alone = text_support.onnx_logits(text_model.onnx, text_model.tokenizer.read_text(), texts)
    gated = Gated(text_model.runtime)
    batcher = Batcher(gated.run, BatchPolicy(max_batch_size=8, stack=True), prepare=gated.prepare)
    first = batcher.submit(strings("held"), 1)
    await asyncio.wait_for(gated.started.get(), 10)  # the first execution holds the only instance
    merged = [batcher.submit(strings(text), 1) for text in texts]
    gated.gate.set()
    await first
    outcomes = await asyncio.gather(*merged)
    await batcher.close()
    # One execution of all four, tokenized once, padded to the longest (cut at max_length).
    assert gated.shapes[1] == (len(texts), text_support.MAX_LENGTH)
    assert len(gated.prepared_on) == 2
    assert all(name.startswith("infer-") for name in gated.prepared_on)  # the batcher's thread, not the loop's
    got = np.concatenate([o.outputs[0] for o in outcomes])
    assert got.shape == (len(texts), 2)
    np.testing.assert_allclose(got, alone, rtol=0, atol=TOLERANCE)
    assert np.array_equal(got.argmax(axis=1), alone.argmax(axis=1))


async def test_a_request_of_several_strings_is_one_row_each(text_model: TextModel) -> None:
    texts = text_support.TEXTS
    batcher = Batcher(
        text_model.runtime.run, BatchPolicy(max_batch_size=8, stack=True), prepare=text_model.runtime.prepare
    )
    outcome = await batcher.submit(strings(*texts), len(texts))
    await batcher.close()
    alone = text_support.onnx_logits(text_model.onnx, text_model.tokenizer.read_text(), texts)
    np.testing.assert_allclose(outcome.outputs[0], alone, rtol=0, atol=TOLERANCE)


def test_a_tokenizer_without_a_pad_token_or_a_graph_without_token_ids_cannot_be_served(
    text_model: TextModel, tmp_path: Path
) -> None:
    options = runtimes.RuntimeOptions("cpu", 1)
    no_pad = tmp_path / "no-pad.json"
    no_pad.write_text(text_model.tokenizer.read_text().replace('"[PAD]"', '"[NOPE]"'))
    with pytest.raises(errors.InvalidArgument, match="pad token"):
        text_runtime.load(text_model.onnx, no_pad, text_support.MAX_LENGTH, None, options)
    from tests.inference import support

    other = tmp_path / "identity.onnx"
    other.write_bytes(support.onnx_identity())
    with pytest.raises(errors.InvalidArgument, match="input_ids"):
        text_runtime.load(other, text_model.tokenizer, text_support.MAX_LENGTH, None, options)


def test_token_type_ids_are_fed_zeros(text_model: TextModel, tmp_path: Path) -> None:
    onnx = text_support.export_bert(tmp_path / "typed.onnx", 300, token_type_ids=True)
    runtime, _ = text_runtime.load(
        onnx, text_model.tokenizer, text_support.MAX_LENGTH, None, runtimes.RuntimeOptions("cpu", 1)
    )
    inputs = runtime.prepare(strings("great", "bad acting"))
    assert len(inputs) == 3 and inputs[2].shape == inputs[0].shape and not inputs[2].any()
    assert runtime.run(inputs)[0].shape == (2, 2)
    runtime.close()
