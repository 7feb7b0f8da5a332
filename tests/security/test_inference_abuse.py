"""Hostile inference clients get clean statuses, and a well-behaved client beside them is unaffected.

Each case runs while a second client, on its own connection, sends the same
ModelInfer request in a loop: every one of its replies must succeed and be
the reference reply byte for byte, and it must have made progress during the
case (the case goes on until it has). What each hostile request gets:

- a message of exactly one byte under the receive limit (MAX_MESSAGE_BYTES,
  the default): served; one byte over: RESOURCE_EXHAUSTED from gRPC, unary
  and in a stream;
- a shape claiming 2^40 elements with a tiny payload: INVALID_ARGUMENT,
  unary and in a stream (the status itself is also pinned in
  tests/inference/test_server.py and test_validation.py);
- 100,000 requested outputs: INVALID_ARGUMENT;
- one ModelStreamInfer stream of a million tiny messages, streamed from
  pre-serialized bytes: each one answered (an error_message, or its result
  for the valid requests mixed in), the stream ends OK, and the server's
  memory is what it was.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from maas.inference.settings import InferenceSettings
from tests.inference import support
from tests.security import inference_support as isup

LIMIT = int(InferenceSettings.model_fields["max_message_bytes"].default)
WIDE = LIMIT // 4 - 64  # elements of the wide model's input: one request of it is just under the limit
INFER = f"/{isup.SERVICE}/ModelInfer"
STREAM = f"/{isup.SERVICE}/ModelStreamInfer"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def onnx_sum(width: int) -> bytes:
    """input FP32 [width] -> output FP32 [1]: the sum (one row, no batch dimension)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["input", "axes"], ["output"], keepdims=1)],
        "sum",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass
class Abused:
    process: support.Process
    good_body: bytes
    good_reply: bytes

    @property
    def address(self) -> str:
        return self.process.address


@pytest.fixture(scope="module")
def abused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Abused]:
    workdir = tmp_path_factory.mktemp("inference-abuse")
    registry = support.start_registry(workdir / "registry")
    client = support.registry_client(registry.address)
    support.register_torch(client, "mlp", support.MLP_ARCH, seed=1)
    signature = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [WIDE]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [1]}],
    }
    support.register_onnx(client, "wide", onnx_sum(WIDE), signature)
    client.close()
    proc = support.start_inference(registry.address, workdir / "inference", models="mlp,wide")
    body = isup.mlp_request("mlp", seed=7, request_id="good").SerializeToString()
    with grpc.insecure_channel(proc.address) as channel:
        reply = channel.unary_unary(INFER)(body, timeout=60)
    try:
        yield Abused(proc, body, reply)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
        registry.stop()


class GoodClient:
    """Another client: the same request in a loop on its own connection, counting what comes back."""

    def __init__(self, abused: Abused) -> None:
        self.abused = abused
        self.ok = 0
        self.wrong_replies = 0
        self.failures: collections.Counter[grpc.StatusCode] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.abused.address, options=OWN_CONNECTION) as channel:
            infer = channel.unary_unary(INFER)
            while not self._stop.is_set():
                try:
                    reply = infer(self.abused.good_body, timeout=60)
                except grpc.RpcError as exc:
                    self.failures[exc.code()] += 1
                    continue
                self.ok += 1
                if reply != self.abused.good_reply:
                    self.wrong_replies += 1

    def __enter__(self) -> GoodClient:
        self._thread.start()
        isup.eventually(lambda: self.ok >= 3 or bool(self.failures), "the good client got going")
        self.started_at = self.ok
        return self

    def progressed(self, requests: int = 20) -> bool:
        return self.ok - self.started_at >= requests or bool(self.failures)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def assert_unaffected(self) -> None:
        assert not self._thread.is_alive()
        assert dict(self.failures) == {}
        assert self.wrong_replies == 0
        assert self.ok - self.started_at >= 20  # it ran during the whole case


def sized_wide_request(size: int) -> bytes:
    """A valid request of the wide model (ones), padded through its id to exactly `size` bytes."""
    req = pb.ModelInferRequest(model_name="wide")
    req.inputs.add(name="input", datatype="FP32", shape=[WIDE])
    req.raw_input_contents.append(np.ones(WIDE, np.float32).tobytes())
    for pad in range(1024):
        req.id = "p" * pad
        if req.ByteSize() == size:
            return req.SerializeToString()
    raise AssertionError(f"cannot pad a request to {size} bytes")


def stream_codes(channel: grpc.Channel, bodies: list[bytes]) -> tuple[grpc.StatusCode, list[bytes]]:
    try:
        return grpc.StatusCode.OK, list(channel.stream_stream(STREAM)(iter(bodies), timeout=120))
    except grpc.RpcError as exc:
        return exc.code(), []


def test_messages_just_under_and_just_over_the_receive_limit(abused: Abused) -> None:
    under, over = sized_wide_request(LIMIT - 1), sized_wide_request(LIMIT + 1)
    assert (len(under), len(over)) == (LIMIT - 1, LIMIT + 1)
    with GoodClient(abused) as good, grpc.insecure_channel(abused.address, options=OWN_CONNECTION) as channel:
        infer = channel.unary_unary(INFER)
        rounds = 0
        while rounds < 3 or not good.progressed():
            reply = pb.ModelInferResponse.FromString(infer(under, timeout=120))
            assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [float(WIDE)]
            with pytest.raises(grpc.RpcError) as info:
                infer(over, timeout=120)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            code, replies = stream_codes(channel, [under])
            assert code == grpc.StatusCode.OK and pb.ModelStreamInferResponse.FromString(replies[0]).error_message == ""
            assert stream_codes(channel, [under, over])[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
            rounds += 1
    good.assert_unaffected()


def test_a_shape_claiming_2_40_elements_with_a_tiny_payload(abused: Abused) -> None:
    req = pb.ModelInferRequest(model_name="mlp", id="huge")
    req.inputs.add(name="input", datatype="FP32", shape=[2**40, 64])
    req.raw_input_contents.append(np.ones(64, np.float32).tobytes())
    flat = pb.ModelInferRequest(model_name="wide", id="huge")
    flat.inputs.add(name="input", datatype="FP32", shape=[2**40])
    flat.raw_input_contents.append(b"\0" * 16)
    bodies = [req.SerializeToString(), flat.SerializeToString()]
    with GoodClient(abused) as good, grpc.insecure_channel(abused.address, options=OWN_CONNECTION) as channel:
        infer = channel.unary_unary(INFER)
        rounds = 0
        while rounds < 200 or not good.progressed():
            for body in bodies:
                with pytest.raises(grpc.RpcError) as info:
                    infer(body, timeout=30)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            rounds += 1
        code, replies = stream_codes(channel, bodies * 100)
        assert code == grpc.StatusCode.OK and len(replies) == 200
        for reply in replies:
            answer = pb.ModelStreamInferResponse.FromString(reply)
            assert answer.error_message and answer.infer_response.id == "huge"
    good.assert_unaffected()


def test_100000_requested_outputs(abused: Abused) -> None:
    req = isup.mlp_request("mlp", seed=1)
    for _ in range(100_000):
        req.outputs.add(name="logits")
    body = req.SerializeToString()
    assert len(body) < LIMIT  # refused by validation, not by the transport
    with GoodClient(abused) as good, grpc.insecure_channel(abused.address, options=OWN_CONNECTION) as channel:
        infer = channel.unary_unary(INFER)
        rounds = 0
        while rounds < 20 or not good.progressed():
            with pytest.raises(grpc.RpcError) as info:
                infer(body, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            rounds += 1
    good.assert_unaffected()


@pytest.mark.slow
def test_a_stream_of_a_million_tiny_messages(abused: Abused) -> None:
    count, every = 1_000_000, 10_000
    tiny = pb.ModelInferRequest(model_name="mlp").SerializeToString()  # no inputs: refused, answered in-stream
    valid = {i: isup.mlp_request("mlp", seed=i, request_id=f"v{i}").SerializeToString() for i in range(0, count, every)}

    def messages() -> Iterator[bytes]:
        for i in range(count):
            yield valid[i] if i % every == 0 else tiny

    pid = abused.process.popen.pid
    rss_before = isup.rss_bytes(pid)
    answered = refused = 0
    results: dict[str, bytes] = {}
    first_refusal = b""
    with GoodClient(abused) as good, grpc.insecure_channel(abused.address, options=OWN_CONNECTION) as channel:
        for reply in channel.stream_stream(STREAM)(messages(), timeout=1800):
            answered += 1
            if reply == first_refusal:
                refused += 1
                continue
            answer = pb.ModelStreamInferResponse.FromString(reply)
            if answer.error_message:
                assert not first_refusal, answer.error_message
                first_refusal = reply
                refused += 1
            else:
                results[answer.infer_response.id] = answer.infer_response.raw_output_contents[0]
        isup.eventually(good.progressed, "the good client ran past the stream")
    assert answered == count
    assert refused == count - len(valid)
    # Each valid request mixed into the flood got its own, exact answer.
    with grpc.insecure_channel(abused.address) as channel:
        infer = channel.unary_unary(INFER)
        for i, body in valid.items():
            alone = pb.ModelInferResponse.FromString(infer(body, timeout=30))
            assert results[f"v{i}"] == alone.raw_output_contents[0]
    good.assert_unaffected()
    assert abused.process.popen.poll() is None
    assert isup.rss_bytes(pid) < rss_before + 64 * 1024 * 1024
