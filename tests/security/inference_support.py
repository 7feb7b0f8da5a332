"""What the inference security tests share: processes, generic calls, the RPC list, RSS.

The inference service always runs as its own process (see tests/inference/support.py).
This pytest process may import tritonclient's generated messages to build requests,
and never maas.oip: both register the same `inference.*` proto symbols. Our own
descriptor is read in a subprocess. Calls go through generic gRPC methods with
pre-serialized bytes, so nothing is parsed or serialized per call on this side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

from tests.inference import support

SERVICE = "inference.GRPCInferenceService"
INFERENCE_HEALTH = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class Method:
    name: str
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{SERVICE}/{self.name}"


_METHODS = """
import json
from maas.oip import grpc_service_pb2 as g
service = g.DESCRIPTOR.services_by_name["GRPCInferenceService"]
print(json.dumps([[m.name, m.client_streaming, m.server_streaming] for m in service.methods]))
"""


def oip_methods() -> list[Method]:
    """Every RPC our inference service declares, read from maas.oip in a subprocess."""
    out = subprocess.run([sys.executable, "-c", _METHODS], capture_output=True, text=True, check=True, timeout=60)
    return [Method(name, bool(cs), bool(ss)) for name, cs, ss in json.loads(out.stdout)]


def start_registry(workdir: Path, **env: str) -> support.Process:
    """A registry process with extra MAAS_REGISTRY_* settings (tokens, TLS)."""
    workdir.mkdir(parents=True, exist_ok=True)
    full = {
        "MAAS_REGISTRY_PORT": "0",
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_REGISTRY_DATABASE_URL": f"sqlite:///{workdir / 'registry.db'}",
        "MAAS_REGISTRY_ARTIFACT_ROOT": str(workdir / "artifacts"),
        "MAAS_REGISTRY_EVENT_POLL_INTERVAL": "0.05",
        "MAAS_REGISTRY_GRACE_SECONDS": "1",
        **{f"MAAS_REGISTRY_{k.upper()}": v for k, v in env.items()},
    }
    return support.start("maas.registry", full, workdir / f"registry-{time.time_ns()}.log", ready="registry")


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def call(
    channel: grpc.Channel, method: Method, payload: bytes, token: str | None = None, timeout: float = 30
) -> tuple[grpc.StatusCode, list[bytes]]:
    """One RPC, generically, with raw bytes: its status code and the raw replies."""
    md = bearer(token)
    try:
        if method.client_streaming and method.server_streaming:
            replies = list(channel.stream_stream(method.path)(iter([payload]), metadata=md, timeout=timeout))
        elif method.server_streaming:
            replies = list(channel.unary_stream(method.path)(payload, metadata=md, timeout=timeout))
        elif method.client_streaming:
            replies = [channel.stream_unary(method.path)(iter([payload]), metadata=md, timeout=timeout)]
        else:
            replies = [channel.unary_unary(method.path)(payload, metadata=md, timeout=timeout)]
    except grpc.RpcError as exc:
        return exc.code(), []
    return grpc.StatusCode.OK, replies


def mlp_request(model: str, rows: int = 1, seed: int = 0, request_id: str = "") -> pb.ModelInferRequest:
    x = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)
    req = pb.ModelInferRequest(model_name=model, id=request_id)
    req.inputs.add(name="input", datatype="FP32", shape=[rows, 64])
    req.raw_input_contents.append(x.tobytes())
    return req


def logits(reply: bytes) -> np.ndarray:
    response = pb.ModelInferResponse.FromString(reply)
    assert [o.name for o in response.outputs] == ["logits"], response.outputs
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(tuple(response.outputs[0].shape))


def health(channel: grpc.Channel, service: str = INFERENCE_HEALTH) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)
