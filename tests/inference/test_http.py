"""The Open Inference Protocol over HTTP/REST (KServe V2), driven with tritonclient.http and plain urllib.

One registry and one inference process serve the module; the same process answers
gRPC (tritonclient.grpc), so every HTTP answer is compared with gRPC's for the same
input, bit for bit, and with the network run here. Errors are the protocol's
`{"error": "..."}` body with 400, 404, 413 or 415. The server runs with a 256 KiB
message limit, so an oversized body is cheap to send.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support

LIMIT = 256 * 1024


@dataclass
class Served:
    grpc: str
    url: str
    module: Any
    min_rows: int
    table: np.ndarray
    process: support.Process

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture(scope="module")
def served(workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient) -> Iterator[Served]:
    _, mlp = support.register_torch(registry, "mlp", support.MLP_ARCH, seed=11)
    data, table = support.onnx_lookup()
    support.register_onnx(registry, "lookup", data, support.LOOKUP_SIGNATURE)
    support.register_onnx(registry, "pair", support.onnx_sum(), support.SUM_SIGNATURE)
    support.register_onnx(registry, "noop", support.onnx_identity(), support.IDENTITY_SIGNATURE)
    proc = support.start_inference(
        registry_process.address, workdir / "http", models="mlp,lookup,pair", max_message_bytes=LIMIT
    )
    assert proc.http_url.startswith("http://127.0.0.1:"), proc.lines
    yield Served(proc.address, proc.http_url, mlp, support.min_execution_rows(proc.address, "mlp"), table, proc)
    assert proc.stop() == 0, proc.log()[-2000:]


@pytest.fixture
def http(served: Served) -> Iterator[th.InferenceServerClient]:
    client = th.InferenceServerClient(served.host)
    yield client
    client.close()


@pytest.fixture
def grpc(served: Served) -> Iterator[tg.InferenceServerClient]:
    client = tg.InferenceServerClient(served.grpc)
    yield client
    client.close()


def call(
    served: Served, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib, as curl would send it: (status, headers, body), errors included."""
    request = urllib.request.Request(served.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post_json(served: Served, path: str, doc: Any) -> tuple[int, dict[str, str], Any]:
    status, headers, body = call(served, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    return status, headers, json.loads(body) if body else None


def grpc_logits(grpc: tg.InferenceServerClient, model: str, x: np.ndarray) -> np.ndarray:
    tensor = tg.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    out = grpc.infer(model, [tensor]).as_numpy("logits")
    assert out is not None
    return out


def rows(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 64)) * 3).astype(np.float32)


# ----------------------------------------------------------------- metadata


def test_health_metadata_and_config_read_as_tritonclient_http_reads_them(
    http: th.InferenceServerClient, grpc: tg.InferenceServerClient
) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert http.is_model_ready("mlp") and http.is_model_ready("mlp", "1")
    assert not http.is_model_ready("mlp", "7") and not http.is_model_ready("nonexistent")

    meta = http.get_server_metadata()
    ours = grpc.get_server_metadata()
    assert (meta["name"], meta["version"]) == (ours.name, ours.version)
    assert meta["extensions"] == [*ours.extensions, "binary_tensor_data"]

    model = http.get_model_metadata("mlp")
    assert model == http.get_model_metadata("mlp", "1")
    assert model == {
        "name": "mlp",
        "versions": ["1"],
        "platform": "pytorch",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }

    # What perf_analyzer -i http reads: numbers where gRPC has 64-bit integers, enum names, proto field names.
    config = http.get_model_config("mlp")
    reference = grpc.get_model_config("mlp").config
    assert config["max_batch_size"] == reference.max_batch_size == 32
    assert config["input"] == [
        {
            "name": "input",
            "data_type": "TYPE_FP32",
            "dims": [64],
            "format": "FORMAT_NONE",
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
            "is_non_linear_format_io": False,
        }
    ]
    assert config["output"][0]["dims"] == [10]
    assert config["version_policy"] == {"specific": {"versions": [1]}}
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 200
    assert config["parameters"]["min_execution_rows"] == {
        "string_value": reference.parameters["min_execution_rows"].string_value
    }

    for ask in (lambda: http.get_model_metadata("nonexistent"), lambda: http.get_model_config("mlp", "9")):
        with pytest.raises(InferenceServerException) as info:
            ask()
        assert info.value.status() == "404"


# ---------------------------------------------------------------- inference


def test_binary_json_and_mixed_requests_answer_what_grpc_answers(
    served: Served, http: th.InferenceServerClient, grpc: tg.InferenceServerClient
) -> None:
    for n, seed in ((1, 1), (3, 2)):
        x = rows(n, seed)
        wanted = grpc_logits(grpc, "mlp", x)
        assert np.array_equal(wanted, support.expected(served.module, x, served.min_rows))

        binary = th.InferInput("input", [n, 64], "FP32")
        binary.set_data_from_numpy(x)  # binary tensor data, and every output asked as binary
        result = http.infer("mlp", [binary], request_id=f"req-{n}")
        assert result.get_response()["id"] == f"req-{n}"
        assert result.get_response()["model_version"] == "1"
        assert np.array_equal(result.as_numpy("logits"), wanted)

        as_json = th.InferInput("input", [n, 64], "FP32")
        as_json.set_data_from_numpy(x, binary_data=False)
        result = http.infer("mlp", [as_json], outputs=[th.InferRequestedOutput("logits", binary_data=False)])
        output = result.get_output("logits")
        assert output is not None and "data" in output and output["shape"] == [n, 10]
        assert np.array_equal(result.as_numpy("logits"), wanted)

    # INT64 as JSON into the ONNX lookup: the table's rows, exactly.
    index = np.array([[3], [0], [9]], dtype=np.int64)
    lookup = th.InferInput("index", [3, 1], "INT64")
    lookup.set_data_from_numpy(index, binary_data=False)
    assert np.array_equal(http.infer("lookup", [lookup]).as_numpy("embedding"), served.table[index])

    # One input as binary data beside one as JSON, in the same request.
    a = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    b = np.ones((2, 4), dtype=np.float32) / 7
    first, second = th.InferInput("a", [2, 4], "FP32"), th.InferInput("b", [2, 4], "FP32")
    first.set_data_from_numpy(a)
    second.set_data_from_numpy(b, binary_data=False)
    ga, gb = tg.InferInput("a", [2, 4], "FP32"), tg.InferInput("b", [2, 4], "FP32")
    ga.set_data_from_numpy(a)
    gb.set_data_from_numpy(b)
    mixed = http.infer("pair", [first, second]).as_numpy("sum")
    assert np.array_equal(mixed, grpc.infer("pair", [ga, gb]).as_numpy("sum"))
    assert np.array_equal(mixed, a + b)


def test_curl_style_json_nested_or_flat_and_binary_output_on_request(
    served: Served, grpc: tg.InferenceServerClient
) -> None:
    x = rows(2, 5)
    wanted = grpc_logits(grpc, "mlp", x)
    for data in (x.tolist(), x.ravel().tolist()):
        status, headers, doc = post_json(
            served,
            "/v2/models/mlp/infer",
            {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": data}]},
        )
        assert status == 200 and headers["content-type"] == "application/json"
        assert doc["model_name"] == "mlp" and doc["model_version"] == "1" and "id" not in doc
        (output,) = doc["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("logits", "FP32", [2, 10])
        assert np.array_equal(np.array(output["data"], dtype=np.float32).reshape(2, 10), wanted)

    # The binary data extension by hand: JSON header, then the raw rows; the answer's outputs as binary.
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2, 64], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    status, headers, body = call(
        served,
        "POST",
        "/v2/models/mlp/versions/1/infer",
        header + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    (output,) = json.loads(body[:length])["outputs"]
    assert output["parameters"] == {"binary_data_size": wanted.nbytes} and "data" not in output
    assert np.array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 10), wanted)


def test_bad_requests_get_the_protocols_error_body_and_the_service_lives_on(
    served: Served, http: th.InferenceServerClient, grpc: tg.InferenceServerClient
) -> None:
    def infer_doc(**input_fields: Any) -> bytes:
        tensor = {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64, **input_fields}
        return json.dumps({"inputs": [tensor]}).encode()

    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]}
    ).encode()
    infer = "/v2/models/mlp/infer"
    cases: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
        ("POST", infer, b"{not json", {}, 400),
        ("POST", infer, b"[1, 2]", {}, 400),
        ("POST", infer, b"{}", {}, 400),
        ("POST", infer, b"[" * 100_000 + b"]" * 100_000, {}, 400),
        ("POST", infer, infer_doc(shape=[1, 63], data=[0.5] * 63), {}, 400),
        ("POST", infer, infer_doc(datatype="FP64"), {}, 400),
        ("POST", infer, infer_doc(data=["a"] * 64), {}, 400),
        ("POST", infer, infer_doc(data=[0.5] * 63), {}, 400),
        ("POST", infer, infer_doc(data=None), {}, 400),
        ("POST", infer, infer_doc(name="other"), {}, 400),
        ("POST", infer, header + b"\0" * 255, {"Inference-Header-Content-Length": str(len(header))}, 400),
        ("POST", infer, header + b"\0" * 256, {"Inference-Header-Content-Length": "99999"}, 400),
        ("POST", infer, header + b"\0" * 256, {"Inference-Header-Content-Length": "-3"}, 400),
        ("POST", infer, header + b"\0" * 256, {"Inference-Header-Content-Length": "\u00b2"}, 400),
        ("POST", infer, header + b"\0" * 256, {"Inference-Header-Content-Length": "9" * 5000}, 400),
        ("POST", infer, infer_doc(), {"Content-Encoding": "gzip"}, 415),
        ("POST", infer, infer_doc(data=[0.5] * (LIMIT // 4)), {}, 413),
        ("POST", "/v2/models/nonexistent/infer", infer_doc(), {}, 404),
        ("POST", "/v2/models/mlp/versions/9/infer", infer_doc(), {}, 404),
        ("GET", "/v2/models/mlp/versions/x/stats", None, {}, 400),
        ("GET", infer, None, {}, 405),
        ("GET", "/v2/no/such/path", None, {}, 404),
        ("POST", "/v2/repository/models/mlp/load", b'{"parameters": {"files": "x"}}', {}, 400),
        ("POST", "/v2/repository/models/nonexistent/unload", b"", {}, 404),
    ]
    for method, path, body, headers, status in cases:
        got, answer_headers, answer = call(served, method, path, body, headers)
        shown = (body or b"")[:80]
        assert got == status, (method, path, shown, answer[:300])
        assert answer_headers["content-type"] == "application/json", (path, shown)
        error = json.loads(answer)["error"]
        assert isinstance(error, str) and error and "Traceback" not in error, (path, shown)

    # An INT64 past int64 and a JSON true for an integer are refused by datatype, not cast.
    for value in (2**70, True):
        doc = {"inputs": [{"name": "index", "shape": [1, 1], "datatype": "INT64", "data": [value]}]}
        status, _, answer = post_json(served, "/v2/models/lookup/infer", doc)
        assert status == 400 and answer["error"].startswith("input 'index'"), answer

    # The output classification extension is not served: said so, not ignored.
    doc = {"inputs": [{"name": "index", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}
    doc["outputs"] = [{"name": "embedding", "parameters": {"classification": 2}}]
    assert post_json(served, "/v2/models/lookup/infer", doc)[0] == 400

    # A request head past 64 KiB is refused and the connection closed, before any route runs.
    host, port = served.host.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 70_000 + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("request line and headers longer")

    # ... and so is one that never ends, sent in pieces.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        with contextlib.suppress(OSError):  # the server may close while pieces are still on their way
            for _ in range(8):
                sock.sendall(b"a" * 16_384)
                time.sleep(0.02)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431")

    # A body declared larger than the limit is refused before it is sent.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {infer} HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * LIMIT}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")

    x = rows(1, 9)
    tensor = th.InferInput("input", [1, 64], "FP32")
    tensor.set_data_from_numpy(x)
    assert np.array_equal(http.infer("mlp", [tensor]).as_numpy("logits"), grpc_logits(grpc, "mlp", x))


# ------------------------------------------------------ statistics, repository


def test_statistics_and_the_repository_over_http(
    http: th.InferenceServerClient, grpc: tg.InferenceServerClient
) -> None:
    def count() -> int:
        (stats,) = http.get_inference_statistics("mlp")["model_stats"]
        assert stats == http.get_inference_statistics("mlp", "1")["model_stats"][0]
        return int(stats["inference_count"])

    before = count()
    tensor = th.InferInput("input", [3, 64], "FP32")
    tensor.set_data_from_numpy(rows(3, 4))
    http.infer("mlp", [tensor])
    assert count() == before + 3
    (stats,) = http.get_inference_statistics("mlp")["model_stats"]
    (reference,) = grpc.get_inference_statistics("mlp").model_stats
    assert stats["inference_count"] == reference.inference_count
    assert stats["inference_stats"]["success"]["count"] == reference.inference_stats.success.count
    assert isinstance(stats["inference_stats"]["success"]["ns"], int)
    assert {s["name"] for s in http.get_inference_statistics()["model_stats"]} >= {"mlp", "lookup", "pair"}

    index = {(m["name"], m.get("state")) for m in http.get_model_repository_index()}
    assert {("mlp", "READY"), ("lookup", "READY"), ("noop", "")} <= index

    config = json.dumps({"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 100}})
    http.load_model("noop", config=config)
    assert http.is_model_ready("noop") and grpc.is_model_ready("noop")
    assert http.get_model_config("noop")["max_batch_size"] == 8
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    tensor = th.InferInput("input", [1, 64], "FP32")
    tensor.set_data_from_numpy(x)
    assert np.array_equal(http.infer("noop", [tensor]).as_numpy("output"), x)
    http.unload_model("noop")
    assert not http.is_model_ready("noop") and not grpc.is_model_ready("noop")
    with pytest.raises(InferenceServerException) as info:
        http.load_model("noop", config="{not json")
    assert info.value.status() == "400"


# ------------------------------------------------------------ exposure rule


def test_an_exposed_http_address_without_tokens_and_tls_refuses_to_start(tmp_path: Path) -> None:
    env = {
        "MAAS_INFERENCE_PORT": "0",
        "MAAS_INFERENCE_METRICS_PORT": "0",
        "MAAS_INFERENCE_HTTP_HOST": "0.0.0.0",
        "MAAS_INFERENCE_HTTP_PORT": "0",
        "MAAS_INFERENCE_CACHE_DIR": str(tmp_path),
        "MAAS_INFERENCE_FOLLOW": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "maas.inference"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to serve on 0.0.0.0 without auth tokens and TLS" in done.stderr


async def test_the_http_socket_says_tcp_so_asyncio_turns_nagle_off() -> None:
    """Bound with proto 0, asyncio left Nagle on and each answer's body waited ~40 ms behind its headers."""
    import asyncio

    from maas.inference.http_server import bind

    loop = asyncio.get_running_loop()
    nodelay: asyncio.Future[int] = loop.create_future()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await loop.create_server(Accepted, sock=bind("127.0.0.1", 0))
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(nodelay, 10) != 0
        writer.close()
    finally:
        server.close()
