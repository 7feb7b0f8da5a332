"""The inference service as its own process, driven with tritonclient.

One registry and one inference process serve the whole module: an MLP and the
classic CIFAR CNN (catalog networks with safetensors weights) and an ONNX
embedding lookup. Outputs are compared bit for bit with the same network run
here on the same rows, padded as the server pads them (to the minimum
execution size it reports in ModelConfig).
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from maas.common.errors import InvalidArgument
from tests.helpers import unused_port
from tests.inference import support


@dataclass
class Served:
    address: str
    metrics_port: int
    modules: dict[str, Any]
    min_rows: dict[str, int]
    table: np.ndarray
    process: support.Process

    def expected(self, model: str, x: np.ndarray) -> np.ndarray:
        return support.expected(self.modules[model], x, self.min_rows[model])


@pytest.fixture(scope="module")
def served(workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient) -> Iterator[Served]:
    _, mlp = support.register_torch(registry, "mlp", support.MLP_ARCH, seed=1)
    _, lenet = support.register_torch(registry, "lenet", support.LENET_ARCH, seed=2)
    _, fragile = support.register_torch(registry, "fragile", support.MLP_ARCH, seed=3)
    data, table = support.onnx_lookup()
    support.register_onnx(registry, "lookup", data, support.LOOKUP_SIGNATURE)
    support.register_onnx(registry, "noop", support.onnx_identity(), support.IDENTITY_SIGNATURE)
    metrics_port = unused_port()
    proc = support.start_inference(
        registry_process.address, workdir / "inference", models="mlp,lenet,fragile", metrics_port=metrics_port
    )
    modules = {"mlp": mlp, "lenet": lenet, "fragile": fragile}
    min_rows = {name: support.min_execution_rows(proc.address, name) for name in modules}
    yield Served(proc.address, metrics_port, modules, min_rows, table, proc)
    assert proc.stop() == 0, proc.log()[-2000:]


@pytest.fixture
def client(served: Served) -> Iterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(served.address)
    yield c
    c.close()


@pytest.fixture
def stub(served: Served) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def code_of(exc: InferenceServerException) -> str:
    return str(exc.status())


def mlp_input(rows: int, seed: int = 0) -> tuple[tc.InferInput, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32) * 3
    tensor = tc.InferInput("input", [rows, 64], "FP32")
    tensor.set_data_from_numpy(x)
    return tensor, x


def raw_request(model: str, name: str, datatype: str, shape: list[int], data: bytes, **kw: Any) -> Any:
    req = service_pb2.ModelInferRequest(model_name=model, **kw)
    req.inputs.add(name=name, datatype=datatype, shape=shape)
    req.raw_input_contents.append(data)
    return req


# ----------------------------------------------------------------- metadata


def test_health_and_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "maas-inference"
    assert set(meta.extensions) == {"model_repository", "model_configuration", "statistics"}
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("mlp", "7")
    assert not client.is_model_ready("nonexistent")

    mlp = client.get_model_metadata("mlp")
    assert mlp.name == "mlp" and list(mlp.versions) == ["1"] and mlp.platform == "pytorch"
    assert [(t.name, t.datatype, list(t.shape)) for t in mlp.inputs] == [("input", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in mlp.outputs] == [("logits", "FP32", [-1, 10])]
    lenet = client.get_model_metadata("lenet", "1")
    assert list(lenet.inputs[0].shape) == [-1, 3, 32, 32]

    for call in (lambda: client.get_model_metadata("nonexistent"), lambda: client.get_model_metadata("mlp", "9")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert code_of(info.value) == "StatusCode.NOT_FOUND"


def test_model_config_is_what_perf_analyzer_reads(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config("mlp").config
    assert config.name == "mlp" and config.platform == "pytorch" and config.backend == "pytorch"
    assert config.max_batch_size == 32
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [64])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]
    assert config.input[0].data_type == config.output[0].data_type == 11  # TYPE_FP32
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 200
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 512
    assert config.instance_group[0].count == 1
    # The probe found a minimum execution size for the torch MLP: its requests are stacked.
    assert config.parameters["stack_requests"].string_value == "true"
    assert 1 <= int(config.parameters["min_execution_rows"].string_value) <= 32
    assert list(client.get_model_config("lenet").config.input[0].dims) == [3, 32, 32]


# -------------------------------------------------------------------- infer


@pytest.mark.parametrize("rows", [1, 3])
def test_infer_raw_answers_exactly_what_the_network_computes(
    client: tc.InferenceServerClient, served: Served, rows: int
) -> None:
    tensor, x = mlp_input(rows, seed=rows)
    result = client.infer("mlp", [tensor], request_id=f"r{rows}")
    response = result.get_response()
    assert response.model_name == "mlp" and response.model_version == "1" and response.id == f"r{rows}"
    assert len(response.raw_output_contents) == 1
    out = result.as_numpy("logits")
    assert out.shape == (rows, 10) and out.dtype == np.float32
    assert np.array_equal(out, served.expected("mlp", x))


def test_infer_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub, served: Served) -> None:
    x = np.random.default_rng(11).standard_normal((2, 64)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp", model_version="1", id="typed")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 64]).contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="logits")
    result = tc.InferResult(stub.ModelInfer(request, timeout=10))
    assert result.get_response().id == "typed"
    assert np.array_equal(result.as_numpy("logits"), served.expected("mlp", x))


def test_infer_cnn_and_requested_outputs(client: tc.InferenceServerClient, served: Served) -> None:
    x = np.random.default_rng(5).uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    tensor = tc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("lenet", [tensor], outputs=[tc.InferRequestedOutput("logits")])
    assert np.array_equal(result.as_numpy("logits"), served.expected("lenet", x))


def test_onnx_model_with_int64_inputs(client: tc.InferenceServerClient, served: Served) -> None:
    client.load_model("lookup")
    index = np.array([[3], [0], [9]], dtype=np.int64)
    tensor = tc.InferInput("index", [3, 1], "INT64")
    tensor.set_data_from_numpy(index)
    out = client.infer("lookup", [tensor]).as_numpy("embedding")
    assert np.array_equal(out, served.table[index])


def test_bad_requests_get_clear_statuses_and_the_service_stays_up(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: tc.InferenceServerClient, served: Served
) -> None:
    good = np.ones((1, 64), np.float32).tobytes()
    cases = [
        (raw_request("nonexistent", "input", "FP32", [1, 64], good), grpc.StatusCode.NOT_FOUND),
        (raw_request("mlp", "input", "FP32", [1, 64], good, model_version="9"), grpc.StatusCode.NOT_FOUND),
        (raw_request("mlp", "input", "FP32", [1, 63], good), grpc.StatusCode.INVALID_ARGUMENT),
        (raw_request("mlp", "input", "FP32", [1, 64], good[:-4]), grpc.StatusCode.INVALID_ARGUMENT),
        (raw_request("mlp", "input", "INT32", [1, 64], good), grpc.StatusCode.INVALID_ARGUMENT),
        (raw_request("mlp", "wrong", "FP32", [1, 64], good), grpc.StatusCode.INVALID_ARGUMENT),
        (raw_request("mlp", "input", "FP32", [-1, 64], good), grpc.StatusCode.INVALID_ARGUMENT),
        (raw_request("mlp", "input", "FP32", [2**40, 64], good), grpc.StatusCode.INVALID_ARGUMENT),
        (raw_request("mlp", "input", "FP32", [33, 64], good * 33), grpc.StatusCode.INVALID_ARGUMENT),
        (service_pb2.ModelInferRequest(model_name="mlp"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    both = raw_request("mlp", "input", "FP32", [1, 64], good)
    both.inputs[0].contents.fp32_contents.extend([1.0] * 64)
    cases.append((both, grpc.StatusCode.INVALID_ARGUMENT))
    unknown_output = raw_request("mlp", "input", "FP32", [1, 64], good)
    unknown_output.outputs.add(name="probabilities")
    cases.append((unknown_output, grpc.StatusCode.INVALID_ARGUMENT))
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == code, (request.inputs, info.value.details())
    tensor, x = mlp_input(1)
    assert np.array_equal(client.infer("mlp", [tensor]).as_numpy("logits"), served.expected("mlp", x))


def test_a_request_that_does_not_parse_is_invalid_argument_unary_and_streamed(
    client: tc.InferenceServerClient, served: Served
) -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # model_name with a length far past the end
    with grpc.insecure_channel(served.address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            infer(garbage, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as info:
            list(stream(iter([garbage]), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    tensor, x = mlp_input(1)
    assert np.array_equal(client.infer("mlp", [tensor]).as_numpy("logits"), served.expected("mlp", x))


def test_streaming_answers_a_bad_request_in_the_middle_and_lives_on(
    client: tc.InferenceServerClient, served: Served
) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        inputs = {}
        for i in range(6):
            if i == 2:
                bad = tc.InferInput("input", [1, 32], "FP32")
                bad.set_data_from_numpy(np.ones((1, 32), np.float32))
                client.async_stream_infer("mlp", [bad], request_id="bad")
                continue
            tensor, x = mlp_input(1, seed=100 + i)
            inputs[f"good{i}"] = x
            client.async_stream_infer("mlp", [tensor], request_id=f"good{i}")
        got = [results.get(timeout=30) for _ in range(6)]
    finally:
        client.stop_stream()
    errors = [error for result, error in got if error is not None]
    assert len(errors) == 1 and "input" in str(errors[0])
    answered = {r.get_response().id: r.as_numpy("logits") for r, e in got if e is None}
    assert set(answered) == set(inputs)
    for request_id, x in inputs.items():
        assert np.array_equal(answered[request_id], served.expected("mlp", x))


def test_a_stream_with_more_requests_in_flight_than_its_window_answers_each_once(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: tc.InferenceServerClient, served: Served
) -> None:
    """All sent before any answer is read: the reader pauses at the window and resumes as answers go out."""

    def successes() -> int:
        return int(client.get_inference_statistics("mlp", "1").model_stats[0].inference_stats.success.count)

    before = successes()
    inputs: dict[str, np.ndarray] = {}
    requests = []
    for i in range(400):  # the server's stream window is 256
        if i % 50 == 7:
            data = np.ones((1, 63), np.float32).tobytes()
            requests.append(raw_request("mlp", "input", "FP32", [1, 63], data, id=f"bad{i}"))
            continue
        rows = 1 + i % 3
        x = np.random.default_rng(1000 + i).standard_normal((rows, 64)).astype(np.float32)
        inputs[f"r{i}"] = x
        requests.append(raw_request("mlp", "input", "FP32", [rows, 64], x.tobytes(), id=f"r{i}"))
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=120))
    assert len(answers) == len(requests)
    failed = {a.infer_response.id: a.error_message for a in answers if a.error_message}
    assert set(failed) == {f"bad{i}" for i in range(400) if i % 50 == 7}
    assert all("input" in message for message in failed.values())
    got = {a.infer_response.id: a.infer_response for a in answers if not a.error_message}
    assert set(got) == set(inputs)
    for request_id, x in inputs.items():
        response = got[request_id]
        assert response.model_name == "mlp" and response.model_version == "1"
        assert list(response.outputs[0].shape) == [x.shape[0], 10]
        out = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(x.shape[0], 10)
        assert out.tobytes() == served.expected("mlp", x).tobytes(), request_id
    assert successes() - before == len(inputs)


def test_a_stream_cancelled_with_requests_in_flight_leaves_nothing_pending(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: tc.InferenceServerClient, served: Served
) -> None:
    x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
    requests = [raw_request("mlp", "input", "FP32", [1, 64], x.tobytes(), id=str(i)) for i in range(300)]
    call = stub.ModelStreamInfer(iter(requests), timeout=60)
    next(call)  # the stream is running with requests in flight
    call.cancel()

    def pending() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).read().decode()
        line = next(
            line for line in text.splitlines() if line.startswith('nv_inference_pending_request_count{model="mlp"')
        )
        return float(line.rsplit(" ", 1)[1])

    # Every request of the cancelled stream is released (answered or dropped); the server serves on.
    for _ in range(200):
        if pending() == 0:
            break
        time.sleep(0.05)
    assert pending() == 0
    tensor, y = mlp_input(1, seed=6)
    assert np.array_equal(client.infer("mlp", [tensor]).as_numpy("logits"), served.expected("mlp", y))


# --------------------------------------------------------------- statistics


def test_statistics_count_successes_failures_and_batches(client: tc.InferenceServerClient) -> None:
    def stats() -> Any:
        response = client.get_inference_statistics("mlp", "1")
        assert [(s.name, s.version) for s in response.model_stats] == [("mlp", "1")]
        return response.model_stats[0]

    before = stats()
    for i in range(3):
        tensor, _ = mlp_input(2, seed=i)
        client.infer("mlp", [tensor])
    bad = tc.InferInput("input", [1, 8], "FP32")
    bad.set_data_from_numpy(np.ones((1, 8), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("mlp", [bad])
    after = stats()
    s0, s1 = before.inference_stats, after.inference_stats
    assert s1.success.count - s0.success.count == 3
    assert s1.fail.count - s0.fail.count == 1
    assert after.inference_count - before.inference_count == 6
    assert after.execution_count - before.execution_count >= 3
    assert s1.queue.count - s0.queue.count == 3
    assert s1.compute_infer.ns > s0.compute_infer.ns
    assert any(b.batch_size == 2 for b in after.batch_stats)
    assert after.last_inference > 0
    every = client.get_inference_statistics("mlp")
    assert "1" in {s.version for s in every.model_stats}
    all_models = {s.name for s in client.get_inference_statistics().model_stats}
    assert {"mlp", "lenet"} <= all_models
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nonexistent")
    assert code_of(info.value) == "StatusCode.NOT_FOUND"


def test_metrics_endpoint_uses_tritons_names(client: tc.InferenceServerClient, served: Served) -> None:
    tensor, _ = mlp_input(1)
    client.infer("mlp", [tensor])
    text = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).read().decode()
    for name in (
        'nv_inference_request_success{model="mlp",version="1"}',
        'nv_inference_count{model="mlp",version="1"}',
        'nv_inference_exec_count{model="mlp",version="1"}',
        'nv_inference_request_duration_us{model="mlp",version="1"}',
        'nv_inference_queue_duration_us{model="mlp",version="1"}',
        'nv_inference_pending_request_count{model="mlp",version="1"}',
        'maas_inference_request_duration_seconds_bucket{le="0.001",model="mlp",version="1"}',
        'maas_inference_batch_size_bucket{le="1.0",model="mlp",version="1"}',
        'maas_inference_model_versions{state="READY"}',
    ):
        assert name in text, name
    success = next(line for line in text.splitlines() if line.startswith('nv_inference_request_success{model="mlp"'))
    assert float(success.rsplit(" ", 1)[1]) >= 1


# ---------------------------------------------------------- load and unload


def test_load_unload_and_index(
    client: tc.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    assert not client.is_model_ready("noop")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["noop"].state == ""  # known to the registry, not loaded
    client.load_model("noop")
    assert client.is_model_ready("noop")
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    tensor = tc.InferInput("input", [1, 64], "FP32")
    tensor.set_data_from_numpy(x)
    assert np.array_equal(client.infer("noop", [tensor]).as_numpy("output"), x)
    ready = client.get_model_repository_index(as_json=False)
    assert ("noop", "1", "READY") in {(m.name, m.version, m.state) for m in ready.models}

    client.unload_model("noop")
    assert not client.is_model_ready("noop")
    with pytest.raises(InferenceServerException) as info:
        client.infer("noop", [tensor])
    assert code_of(info.value) == "StatusCode.NOT_FOUND"

    # By version, as a load parameter.
    load = service_pb2.RepositoryModelLoadRequest(model_name="noop")
    load.parameters["version"].int64_param = 1
    stub.RepositoryModelLoad(load, timeout=60)
    assert client.is_model_ready("noop", "1")
    client.unload_model("noop")

    for request, code in (
        (service_pb2.RepositoryModelLoadRequest(model_name="nonexistent"), grpc.StatusCode.NOT_FOUND),
        (service_pb2.RepositoryModelLoadRequest(model_name="../etc"), grpc.StatusCode.INVALID_ARGUMENT),
        (service_pb2.RepositoryModelUnloadRequest(model_name="nonexistent"), grpc.StatusCode.NOT_FOUND),
    ):
        call = (
            stub.RepositoryModelLoad
            if isinstance(request, service_pb2.RepositoryModelLoadRequest)
            else stub.RepositoryModelUnload
        )
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=30)
        assert err.value.code() == code
    bad = service_pb2.RepositoryModelLoadRequest(model_name="noop")
    bad.parameters["alias"].string_param = "production"
    bad.parameters["version"].int64_param = 1
    with pytest.raises(grpc.RpcError) as err:
        stub.RepositoryModelLoad(bad, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_bare_load_serves_the_default_alias_else_the_latest_ready_version(
    client: tc.InferenceServerClient, registry: BlockingRegistryClient, served: Served
) -> None:
    # What tritonclient's load_model and `maas serving load MODEL` send: a name, no alias, no version.
    support.register_torch(registry, "unaliased", support.MLP_ARCH, seed=4, alias=None)
    support.register_torch(registry, "unaliased", support.MLP_ARCH, seed=5, alias=None)
    client.load_model("unaliased")
    assert client.is_model_ready("unaliased", "2")
    support.register_torch(registry, "aliased", support.MLP_ARCH, seed=6)  # production -> 1
    support.register_torch(registry, "aliased", support.MLP_ARCH, seed=7, alias=None)
    client.load_model("aliased")
    assert client.is_model_ready("aliased", "1") and not client.is_model_ready("aliased", "2")
    for name in ("unaliased", "aliased"):
        client.unload_model(name)


def test_a_version_that_cannot_be_served_fails_with_a_reason_and_the_old_one_keeps_serving(
    client: tc.InferenceServerClient, registry: BlockingRegistryClient, served: Served
) -> None:
    # Weights of another shape under the MLP architecture: the registry refuses them at upload,
    # so the alias never moves and the served version stays.
    other = support.torch_model({**support.MLP_ARCH, "args": {"hidden": [32], "num_classes": 10}}, seed=9)
    with pytest.raises(InvalidArgument):
        support.register_torch(registry, "fragile", support.MLP_ARCH, seed=4, state=other.state_dict())
    assert registry.resolve("fragile@production").version == 1
    # A graph the registry accepts (it parses, its opset is supported) but onnxruntime cannot build:
    # the load fails with the runtime's reason and the version that serves stays.
    unbuildable = support.register_onnx(registry, "fragile", support.onnx_unknown_op(), support.IDENTITY_SIGNATURE)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("fragile")
    assert code_of(info.value) == "StatusCode.FAILED_PRECONDITION"
    assert f"fragile/{unbuildable}" in str(info.value)
    index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
    assert index[("fragile", str(unbuildable))].state == "UNAVAILABLE"
    assert index[("fragile", str(unbuildable))].reason
    assert index[("fragile", "1")].state == "READY"
    tensor, x = mlp_input(1)
    result = client.infer("fragile", [tensor])
    assert result.get_response().model_version == "1"
    assert np.array_equal(result.as_numpy("logits"), served.expected("fragile", x))


# --------------------------------------------------------------- concurrency


async def test_concurrency_4_async_load_run_has_no_errors(served: Served) -> None:
    module = served.modules["mlp"]
    inputs = [np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32) for i in range(20)]
    wanted = [support.expected(module, x, served.min_rows["mlp"]) for x in inputs]
    errors: list[BaseException] = []
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        async with tca.InferenceServerClient(served.address) as client:
            for i in range(50):
                x = inputs[(k + i) % len(inputs)]
                tensor = tca.InferInput("input", [1, 64], "FP32")
                tensor.set_data_from_numpy(x)
                try:
                    result = await client.infer("mlp", [tensor])
                except InferenceServerException as exc:
                    errors.append(exc)
                    continue
                assert np.array_equal(result.as_numpy("logits"), wanted[(k + i) % len(inputs)])
                done += 1

    await asyncio.gather(*(worker(k) for k in range(4)))
    assert errors == [] and done == 200


async def test_a_poisoned_request_batched_with_a_good_one_fails_alone(served: Served) -> None:
    """Both pass validation; the bad index fails inside the model's execution."""

    def tensor(index: int) -> tca.InferInput:
        t = tca.InferInput("index", [1, 1], "INT64")
        t.set_data_from_numpy(np.array([[index]], dtype=np.int64))
        return t

    async with tca.InferenceServerClient(served.address) as good, tca.InferenceServerClient(served.address) as bad:
        await good.load_model("lookup", config=json.dumps(support.BATCHING_CONFIG))

        async def pair() -> None:
            ok, failed = await asyncio.gather(
                good.infer("lookup", [tensor(3)]), bad.infer("lookup", [tensor(99)]), return_exceptions=True
            )
            assert not isinstance(ok, BaseException), ok
            assert np.array_equal(ok.as_numpy("embedding"), served.table[[[3]]])
            assert isinstance(failed, InferenceServerException)
            assert code_of(failed) == "StatusCode.INVALID_ARGUMENT"

        await support.pairs_until_stacked(good, "lookup", pair)


@pytest.mark.parametrize("arch", [support.MLP_ARCH, support.LENET_ARCH], ids=["mlp", "cnn"])
async def test_a_torch_request_stacked_with_a_poisoned_one_is_exactly_what_it_gets_alone(
    served: Served, registry: BlockingRegistryClient, arch: dict[str, Any]
) -> None:
    """A real stacked batch of a torch model: NaN and infinity in the neighbour change no bit of the good row."""
    name = f"stacked-{arch['name']}"
    _, module = support.register_torch(registry, name, arch, seed=21)
    shape = [1, *arch["input_shape"]]
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32) * 3
    poison = np.full(shape, np.nan, dtype=np.float32)
    poison.reshape(-1)[::2] = np.inf

    def tensor(values: np.ndarray) -> tca.InferInput:
        t = tca.InferInput("input", shape, "FP32")
        t.set_data_from_numpy(values)
        return t

    async with tca.InferenceServerClient(served.address) as good, tca.InferenceServerClient(served.address) as bad:
        await good.load_model(name, config=json.dumps(support.BATCHING_CONFIG))
        config = (await good.get_model_config(name)).config
        assert config.parameters["stack_requests"].string_value == "true"
        min_rows = int(config.parameters["min_execution_rows"].string_value)
        alone = (await good.infer(name, [tensor(x)])).as_numpy("logits")

        async def pair() -> None:
            ok, poisoned = await asyncio.gather(good.infer(name, [tensor(x)]), bad.infer(name, [tensor(poison)]))
            assert ok.as_numpy("logits").tobytes() == alone.tobytes()
            assert not np.isfinite(poisoned.as_numpy("logits")).all()

        await support.pairs_until_stacked(good, name, pair)
        assert (await good.infer(name, [tensor(x)])).as_numpy("logits").tobytes() == alone.tobytes()
        await good.unload_model(name)
    assert np.array_equal(alone, support.expected(module, x, min_rows))
