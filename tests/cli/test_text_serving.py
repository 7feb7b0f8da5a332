"""Serving a text model end to end: `maas push --tokenizer`, tritonclient sending BYTES, `maas predict --text`.

A real registry and inference service run as their own processes; the model
is a small BERT built by transformers from a config and exported to ONNX, its
WordPiece tokenizer trained here on a small corpus (tests.inference.text_support).
The service's answers are compared with onnxruntime run here on the same
tokenization, alone and merged into one batch with texts of very different
lengths, within the tolerance the README states.

The test process talks to the service with tritonclient (its generated
modules must not meet maas.oip, so the `maas` command runs as a process too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from maas.v1 import registry_pb2 as rpb
from tests.cli.support import Result, assert_one_line_error, maas
from tests.inference import support, text_support

TOLERANCE = 1e-4  # on logits, alone or batched (README: "Serving text models")
MAX_STRINGS = 4
MAX_BYTES = 2048


@dataclass
class TextSuite:
    registry: support.Process
    inference: support.Process
    work: Path
    onnx: Path
    tokenizer: Path
    labels: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "MAAS_REGISTRY_ADDRESS": self.registry.address,
            "MAAS_INFERENCE_ADDRESS": self.inference.address,
            "MAAS_TIMEOUT": "30",
        }

    def maas(self, *args: str) -> Result:
        return maas(*args, env=self.env, cwd=self.work)

    def expected(self, texts: list[str]) -> np.ndarray:
        return text_support.onnx_logits(self.onnx, self.tokenizer.read_text(), texts)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextSuite]:
    work = tmp_path_factory.mktemp("text-serving")
    tokenizer = text_support.train_tokenizer()
    tokenizer_path = work / "tokenizer.json"
    tokenizer_path.write_text(tokenizer.to_str())
    onnx = text_support.export_bert(work / "bert.onnx", tokenizer.get_vocab_size(), seed=3)
    labels = work / "labels.txt"
    labels.write_text("\n".join(text_support.LABELS) + "\n")
    registry = support.start_registry(work / "registry")
    inference = support.start_inference(
        registry.address, work / "inference", max_text_strings=MAX_STRINGS, max_text_bytes=MAX_BYTES
    )
    yield TextSuite(registry, inference, work, onnx, tokenizer_path, labels)
    assert inference.stop() == 0, inference.log()[-3000:]
    registry.stop()


@pytest.fixture(scope="module")
def pushed(suite: TextSuite) -> dict[str, Any]:
    """`maas push reviews bert.onnx --tokenizer tokenizer.json --max-length 48 --labels labels.txt`, then served."""
    result = suite.maas(
        "push",
        "reviews",
        str(suite.onnx),
        "--tokenizer",
        str(suite.tokenizer),
        "--max-length",
        str(text_support.MAX_LENGTH),
        "--labels",
        str(suite.labels),
        "--promote",
        "production",
        "--json",
    )
    assert result.rc == 0, result.stderr
    loaded = suite.maas("serving", "load", "reviews")
    assert loaded.rc == 0, loaded.stderr + suite.inference.log()[-3000:]
    return dict(result.json())


@pytest.fixture
def client(suite: TextSuite, pushed: dict[str, Any]) -> Iterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(suite.inference.address)
    yield c
    c.close()


def text_input(texts: list[Any]) -> tc.InferInput:
    tensor = tc.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object))
    return tensor


def code_of(exc: InferenceServerException) -> str:
    return str(exc.status())


def test_push_registers_the_onnx_graph_with_its_tokenizer_and_max_length(
    suite: TextSuite, pushed: dict[str, Any]
) -> None:
    assert pushed["status"] == "VERSION_STATUS_READY"
    assert [a["format"] for a in pushed["artifacts"]] == ["MODEL_FORMAT_ONNX", "MODEL_FORMAT_TOKENIZER"]
    arch = pushed["architecture"]
    assert arch["task"] == "text_classification" and arch["text"] == {"max_length": text_support.MAX_LENGTH}
    assert arch["labels"] == text_support.LABELS
    out = suite.work / "downloaded.json"
    got = suite.maas("versions", "download", "reviews/1", "--format", "tokenizer", "-o", str(out))
    assert got.rc == 0, got.stderr
    assert out.read_bytes() == suite.tokenizer.read_bytes()


def test_metadata_shows_one_bytes_input(client: tc.InferenceServerClient) -> None:
    meta = client.get_model_metadata("reviews")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("logits", "FP32", [-1, 2])]
    config = client.get_model_config("reviews").config
    assert config.input[0].data_type == 13  # TYPE_STRING, as Triton declares BYTES inputs
    assert config.parameters["stack_requests"].string_value == "true"


def test_tritonclient_strings_get_what_onnxruntime_computes_on_the_same_tokenization(
    suite: TextSuite, client: tc.InferenceServerClient
) -> None:
    texts = text_support.TEXTS
    result = client.infer("reviews", [text_input(texts)])
    logits = result.as_numpy("logits")
    assert logits.shape == (len(texts), 2)
    np.testing.assert_allclose(logits, suite.expected(texts), rtol=0, atol=TOLERANCE)


def test_typed_bytes_contents_work_as_raw_ones(suite: TextSuite, pushed: dict[str, Any]) -> None:
    import grpc

    texts = ["naïve café", "bad acting"]
    request = service_pb2.ModelInferRequest(model_name="reviews")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    with grpc.insecure_channel(suite.inference.address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(len(texts), 2)
    np.testing.assert_allclose(logits, suite.expected(texts), rtol=0, atol=TOLERANCE)


def test_strings_over_http_binary_or_json_get_what_grpc_gets(
    suite: TextSuite, client: tc.InferenceServerClient
) -> None:
    import tritonclient.http as th

    texts = ["naïve café", "bad acting", text_support.TEXTS[1]]
    grpc_logits = client.infer("reviews", [text_input(texts)]).as_numpy("logits")
    web = th.InferenceServerClient(suite.inference.http_url.removeprefix("http://"))
    try:
        assert web.get_model_metadata("reviews")["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert web.get_model_config("reviews")["input"][0]["data_type"] == "TYPE_STRING"
        for binary in (True, False):  # 4-byte lengths and UTF-8 after the JSON, or JSON strings
            tensor = th.InferInput("text", [len(texts)], "BYTES")
            tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
            logits = web.infer("reviews", [tensor]).as_numpy("logits")
            assert np.array_equal(logits, grpc_logits), binary
        # Past the service's bounds, or not strings: 400 naming the input, as gRPC's INVALID_ARGUMENT.
        for bad in (["x"] * (MAX_STRINGS + 1), ["x" * (MAX_BYTES + 1)]):
            tensor = th.InferInput("text", [len(bad)], "BYTES")
            tensor.set_data_from_numpy(np.array(bad, dtype=object), binary_data=False)
            with pytest.raises(InferenceServerException) as info:
                web.infer("reviews", [tensor])
            assert info.value.status() == "400" and "input 'text'" in str(info.value.message())
    finally:
        web.close()
    np.testing.assert_allclose(grpc_logits, suite.expected(texts), rtol=0, atol=TOLERANCE)


def test_maas_predict_text_prints_the_top_classes(suite: TextSuite, pushed: dict[str, Any]) -> None:
    texts = ["i loved every minute", "dull, slow and far too long"]
    result = suite.maas("predict", "reviews", "--text", texts[0], "--text", texts[1], "--json")
    assert result.rc == 0, result.stderr
    doc = result.json()
    expected = suite.expected(texts)
    assert [row[0]["label"] for row in doc["predictions"]] == [text_support.LABELS[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(np.array(doc["outputs"]["logits"]["data"]), expected, rtol=0, atol=TOLERANCE)
    plain = suite.maas("predict", "reviews", "--text", *texts)
    assert plain.rc == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0] == "reviews/1: logits [2, 2]"
    assert lines[1].startswith(f"[0] {text_support.LABELS[expected[0].argmax()]} (")


async def test_a_short_and_a_long_text_merged_into_one_batch_get_what_each_gets_alone(
    suite: TextSuite, pushed: dict[str, Any]
) -> None:
    short, long = text_support.TEXTS[0], text_support.TEXTS[1]
    expected = suite.expected([short, long])

    def tensor(text: str) -> tca.InferInput:
        t = tca.InferInput("text", [1], "BYTES")
        t.set_data_from_numpy(np.array([text], dtype=object))
        return t

    async with (
        tca.InferenceServerClient(suite.inference.address) as a,
        tca.InferenceServerClient(suite.inference.address) as b,
    ):
        await a.load_model("reviews", config=json.dumps(support.BATCHING_CONFIG))
        alone = [(await a.infer("reviews", [tensor(t)])).as_numpy("logits") for t in (short, long)]

        async def pair() -> None:
            one, two = await asyncio.gather(a.infer("reviews", [tensor(short)]), b.infer("reviews", [tensor(long)]))
            for got, want, single in zip((one, two), expected, alone, strict=True):
                np.testing.assert_allclose(got.as_numpy("logits")[0], want, rtol=0, atol=TOLERANCE)
                np.testing.assert_allclose(got.as_numpy("logits"), single, rtol=0, atol=TOLERANCE)

        await support.pairs_until_stacked(a, "reviews", pair)
        await a.load_model("reviews")  # back to the service's own batching for the other tests


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: [b"caf\xe9 au lait"], "UTF-8"),
        (lambda: ["a"] * (MAX_STRINGS + 1), "strings"),
        (lambda: ["x" * (MAX_BYTES + 1)], "bytes"),
    ],
    ids=["not-utf8", "too-many", "too-long"],
)
def test_bad_strings_are_invalid_argument_naming_the_input_and_the_service_stays_up(
    suite: TextSuite, client: tc.InferenceServerClient, make: Any, words: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("reviews", [text_input(make())])
    assert code_of(info.value) == "StatusCode.INVALID_ARGUMENT"
    assert "input 'text'" in str(info.value) and words in str(info.value)
    assert client.is_server_live()
    ok = client.infer("reviews", [text_input(["great"])]).as_numpy("logits")
    np.testing.assert_allclose(ok, suite.expected(["great"]), rtol=0, atol=TOLERANCE)


def test_bytes_to_an_image_model_and_fp32_to_a_text_model_are_invalid_argument(
    suite: TextSuite, client: tc.InferenceServerClient
) -> None:
    with _registry(suite) as registry:
        support.register_onnx(registry, "vectors", support.onnx_identity(), support.IDENTITY_SIGNATURE)
    client.load_model("vectors")
    strings = tc.InferInput("input", [1, 64], "BYTES")
    strings.set_data_from_numpy(np.array([["a"] * 64], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer("vectors", [strings])
    assert code_of(info.value) == "StatusCode.INVALID_ARGUMENT" and "BYTES" in str(info.value)
    numbers = tc.InferInput("text", [2], "FP32")
    numbers.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("reviews", [numbers])
    assert code_of(info.value) == "StatusCode.INVALID_ARGUMENT" and "expected BYTES" in str(info.value)
    # and `maas predict` says which kind of input each model takes before sending anything
    wrong = suite.maas("predict", "vectors", "--text", "hello")
    assert_one_line_error(wrong)
    assert "not text" in wrong.stderr
    npy = suite.work / "row.npy"
    np.save(npy, np.zeros((1, 4), dtype=np.float32))
    wrong = suite.maas("predict", "reviews", "--input", str(npy))
    assert_one_line_error(wrong)
    assert "--text" in wrong.stderr


def test_a_text_version_without_its_tokenizer_fails_to_load_with_the_reason(
    suite: TextSuite, pushed: dict[str, Any], client: tc.InferenceServerClient
) -> None:
    with _registry(suite) as registry:
        registry.ensure_model("bare")
        version = registry.create_version(
            "bare",
            format=rpb.MODEL_FORMAT_ONNX,
            architecture={"task": "text_classification", "text": {"max_length": text_support.MAX_LENGTH}},
        )
        ready = registry.upload_artifact("bare", version.version, suite.onnx)
        assert ready.status == rpb.VERSION_STATUS_READY and len(ready.artifacts) == 1
    with pytest.raises(InferenceServerException) as info:
        client.load_model("bare")
    assert code_of(info.value) == "StatusCode.FAILED_PRECONDITION"
    assert "TOKENIZER" in str(info.value) and "bare/1" in str(info.value)
    loaded = suite.maas("serving", "load", "bare")
    assert_one_line_error(loaded)
    assert "tokenizer" in loaded.stderr
    assert client.is_model_ready("reviews")


def test_push_refuses_a_graph_that_does_not_take_token_ids_before_creating_anything(suite: TextSuite) -> None:
    graph = suite.work / "identity.onnx"
    graph.write_bytes(support.onnx_identity())
    result = suite.maas("push", "not-text", str(graph), "--tokenizer", str(suite.tokenizer), "--max-length", "16")
    assert_one_line_error(result)
    assert "input_ids" in result.stderr
    missing = suite.maas("push", "not-text", str(suite.onnx), "--tokenizer", str(suite.tokenizer))
    assert_one_line_error(missing)
    assert "--max-length" in missing.stderr
    arch = suite.work / "text-arch.json"
    arch.write_text(json.dumps({"task": "text_classification", "text": {"max_length": 16}}))
    untokenized = suite.maas("push", "not-text", str(suite.onnx), "--architecture-file", str(arch))
    assert_one_line_error(untokenized)
    assert "--tokenizer" in untokenized.stderr
    listed = suite.maas("models", "ls", "--json")
    assert listed.rc == 0, listed.stderr
    assert "not-text" not in listed.stdout


def _registry(suite: TextSuite) -> contextlib.closing[BlockingRegistryClient]:
    return contextlib.closing(support.registry_client(suite.registry.address))
