"""Faults the inference service must ride out: a corrupt stored artifact, SIGTERM under load.

A byte flipped in a blob in the registry's artifact root: the registry's
DownloadArtifact answers DATA_LOSS, the inference service records that
version UNAVAILABLE with a reason, refuses to load it, and goes on serving the
version it had.

SIGTERM while unary ModelInfer calls and a ModelStreamInfer stream are in
flight on a deliberately slow model (about a second per request, one at a
time): a health Watch opened beforehand sees NOT_SERVING before any of those
calls finishes, every one of them finishes with its exact answer, and the
process exits 0. Only the order of events is asserted, never their timing.
"""

from __future__ import annotations

import queue
import re
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from maas.common import errors
from maas.common.clients.registry import BlockingRegistryClient
from tests.helpers import unused_port
from tests.inference import support
from tests.security import inference_support as isup
from tests.security.overload import onnx_slow

INFER = f"/{isup.SERVICE}/ModelInfer"
STREAM = f"/{isup.SERVICE}/ModelStreamInfer"
WATCH = "/grpc.health.v1.Health/Watch"


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference-faults")


@pytest.fixture(scope="module")
def registry_process(registry_dir: Path) -> Iterator[support.Process]:
    proc = support.start_registry(registry_dir / "registry")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def registry(registry_process: support.Process) -> Iterator[BlockingRegistryClient]:
    client = support.registry_client(registry_process.address)
    yield client
    client.close()


# --------------------------------------------------------- a flipped byte


def test_a_flipped_byte_in_a_stored_artifact_is_refused_and_the_old_version_keeps_serving(
    registry_process: support.Process, registry: BlockingRegistryClient, registry_dir: Path, tmp_path: Path
) -> None:
    _, v1 = support.register_torch(registry, "flip", support.MLP_ARCH, seed=1)
    v2, _ = support.register_torch(registry, "flip", support.MLP_ARCH, seed=2, alias=None)
    sha = registry.get_version("flip", v2).sha256
    [blob] = [p for p in (registry_dir / "registry" / "artifacts").rglob(sha) if p.is_file()]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(errors.DataLoss):
        registry.download_artifact("flip", v2, tmp_path / "download")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing half-downloaded is left

    proc = support.start_inference(registry_process.address, tmp_path / "inference", models="flip@production")
    client = tc.InferenceServerClient(proc.address)
    try:
        min_rows = support.min_execution_rows(proc.address, "flip")
        x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
        tensor = tc.InferInput("input", [1, 64], "FP32")
        tensor.set_data_from_numpy(x)

        registry.set_alias("flip", "production", v2)  # the follower tries v2 on its own

        def v2_refused() -> bool:
            index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
            entry = index.get(("flip", str(v2)))
            return entry is not None and entry.state == "UNAVAILABLE"

        isup.eventually(v2_refused, "the corrupt version recorded UNAVAILABLE")
        # Asked explicitly, it is refused with the registry's status.
        with pytest.raises(InferenceServerException) as info:
            client.load_model("flip")
        assert str(info.value.status()) == "StatusCode.DATA_LOSS"
        index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
        assert index[("flip", str(v2))].state == "UNAVAILABLE" and index[("flip", str(v2))].reason
        assert index[("flip", "1")].state == "READY"
        result = client.infer("flip", [tensor])
        assert result.get_response().model_version == "1"
        assert np.array_equal(result.as_numpy("logits"), support.expected(v1, x, min_rows))
        # The corrupt bytes never reached the cache under their name.
        assert not [p for p in (tmp_path / "inference" / "cache").rglob("*") if sha in p.name]
    finally:
        client.close()
        assert proc.stop() == 0, proc.log()[-2000:]


# ---------------------------------------------------------------- SIGTERM

# A few seconds per request on one thread: every call must be in flight (one
# running, the rest queued) before the first finishes, on a loaded machine too.
WIDTH, DEPTH = 2048, 1500


SLOW_SIGNATURE = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, WIDTH]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, WIDTH]}],
}


def slow_request(i: int) -> tuple[bytes, np.ndarray]:
    x = np.random.default_rng(i).standard_normal((1, WIDTH)).astype(np.float32)
    req = pb.ModelInferRequest(model_name="slow", id=f"r{i}")
    req.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString(), x


def pending(metrics_port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    found = re.search(r'^nv_inference_pending_request_count\{model="slow",version="1"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def test_sigterm_flips_health_first_and_lets_unary_calls_and_a_stream_finish(
    registry_process: support.Process, registry: BlockingRegistryClient, tmp_path: Path
) -> None:
    support.register_onnx(registry, "slow", onnx_slow(WIDTH, DEPTH), SLOW_SIGNATURE)
    metrics_port = unused_port()
    proc = support.start_inference(
        registry_process.address, tmp_path / "inference", models="slow", grace_seconds=120, metrics_port=metrics_port
    )
    events: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def record(*event: Any) -> None:
        with lock:
            events.append(event)

    unary = {i: slow_request(i) for i in range(3)}
    streamed = {i: slow_request(i) for i in range(10, 12)}
    results: dict[str, tuple[grpc.StatusCode, bytes]] = {}
    close_stream = threading.Event()
    serving = threading.Event()

    with grpc.insecure_channel(proc.address) as channel:
        watch = channel.unary_stream(WATCH)(
            health_pb2.HealthCheckRequest(service=isup.INFERENCE_HEALTH).SerializeToString()
        )

        def watcher() -> None:
            try:
                for raw in watch:
                    status = health_pb2.HealthCheckResponse.FromString(raw).status
                    record("health", status)
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        serving.set()
                    else:
                        watch.cancel()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    record("watch failed", exc.code())

        def call(i: int) -> None:
            try:
                reply = channel.unary_unary(INFER)(unary[i][0], timeout=300)
                results[f"r{i}"] = (grpc.StatusCode.OK, reply)
            except grpc.RpcError as exc:
                results[f"r{i}"] = (exc.code(), b"")
            record("done", f"r{i}")

        answers: queue.Queue[bytes | None] = queue.Queue()  # None: the stream ended

        def requests() -> Iterator[bytes]:
            for body, _ in streamed.values():
                yield body
            close_stream.wait(300)  # the stream stays open until its answers are in

        def stream() -> None:
            try:
                for raw in channel.stream_stream(STREAM)(requests(), timeout=300):
                    answer = pb.ModelStreamInferResponse.FromString(raw)
                    record("done", answer.infer_response.id)
                    answers.put(raw)
                results["stream"] = (grpc.StatusCode.OK, b"")
            except grpc.RpcError as exc:
                results["stream"] = (exc.code(), b"")
            answers.put(None)

        threads = [threading.Thread(target=watcher), threading.Thread(target=stream)]
        threads += [threading.Thread(target=call, args=(i,)) for i in unary]
        threads[0].start()
        assert serving.wait(60)
        for t in threads[1:]:
            t.start()
        isup.eventually(lambda: pending(metrics_port) == len(unary) + len(streamed), "all calls in flight")
        record("sigterm")
        proc.popen.send_signal(signal.SIGTERM)

        got = []
        while len(got) < len(streamed) and (raw := answers.get(timeout=300)) is not None:
            got.append(pb.ModelStreamInferResponse.FromString(raw))
        close_stream.set()
        for t in threads:
            t.join(300)
        assert proc.popen.wait(300) == 0, proc.log()[-3000:]

    log = [e[0] for e in events]
    assert log.count("sigterm") == 1 and "watch failed" not in log, events
    flipped = events.index(("health", health_pb2.HealthCheckResponse.NOT_SERVING))
    first_done = log.index("done")
    assert events.index(("sigterm",)) < flipped < first_done, events
    assert log.count("done") == len(unary) + len(streamed)
    for i, (_, x) in unary.items():
        code, reply = results[f"r{i}"]
        assert code == grpc.StatusCode.OK
        out = pb.ModelInferResponse.FromString(reply).raw_output_contents[0]
        assert np.array_equal(np.frombuffer(out, np.float32).reshape(1, WIDTH), x)
    assert results["stream"][0] == grpc.StatusCode.OK
    by_id = {a.infer_response.id: a for a in got}
    for i, (_, x) in streamed.items():
        answer = by_id[f"r{i}"]
        assert answer.error_message == ""
        out = np.frombuffer(answer.infer_response.raw_output_contents[0], np.float32).reshape(1, WIDTH)
        assert np.array_equal(out, x)
