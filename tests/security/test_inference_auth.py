"""Tokens on the inference service, and the inference service as a client of a locked registry.

Every RPC of inference.GRPCInferenceService (read from our descriptor) is called
with no token, a wrong token, a read token and a write token, with valid
payloads: loading a real model, unloading the served one. So a missing check
would show as a model loaded or unloaded, which the test looks for after the
refused calls, before an admin token does both as a control.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2 as pb

from maas.common.auth import REQUIRED_SCOPE
from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support
from tests.security import inference_support as isup
from tests.security.pki import Pair, Pki, make_pki

ADMIN, WRITE, READ = "admin-token-0123456789", "write-token-0123456789", "read-token-01234567890"
TOKENS = f"{ADMIN}:admin,{WRITE}:write,{READ}:read"
WRONG = "not-a-token-but-long-enough"


@dataclass
class Guarded:
    address: str
    module: object
    min_rows: int
    http_url: str


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    workdir = tmp_path_factory.mktemp("inference-auth")
    registry = support.start_registry(workdir / "registry")
    client = support.registry_client(registry.address)
    _, module = support.register_torch(client, "guarded", support.MLP_ARCH, seed=1)
    support.register_torch(client, "spare", support.MLP_ARCH, seed=2)
    client.close()
    proc = support.start_inference(registry.address, workdir / "inference", models="guarded", auth_tokens=TOKENS)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            config = pb.ModelConfigResponse.FromString(
                channel.unary_unary(f"/{isup.SERVICE}/ModelConfig")(
                    pb.ModelConfigRequest(name="guarded").SerializeToString(), metadata=isup.bearer(READ), timeout=30
                )
            ).config
        yield Guarded(proc.address, module, int(config.parameters["min_execution_rows"].string_value), proc.http_url)
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]
        registry.stop()


def payloads() -> dict[str, bytes]:
    infer = isup.mlp_request("guarded", seed=3).SerializeToString()
    return {
        "ServerLive": pb.ServerLiveRequest().SerializeToString(),
        "ServerReady": pb.ServerReadyRequest().SerializeToString(),
        "ModelReady": pb.ModelReadyRequest(name="guarded").SerializeToString(),
        "ServerMetadata": pb.ServerMetadataRequest().SerializeToString(),
        "ModelMetadata": pb.ModelMetadataRequest(name="guarded").SerializeToString(),
        "ModelConfig": pb.ModelConfigRequest(name="guarded").SerializeToString(),
        "ModelInfer": infer,
        "ModelStreamInfer": infer,
        "ModelStatistics": pb.ModelStatisticsRequest(name="guarded").SerializeToString(),
        "RepositoryIndex": pb.RepositoryIndexRequest().SerializeToString(),
        "RepositoryModelLoad": pb.RepositoryModelLoadRequest(model_name="spare").SerializeToString(),
        "RepositoryModelUnload": pb.RepositoryModelUnloadRequest(model_name="guarded").SerializeToString(),
    }


def ready(channel: grpc.Channel, model: str) -> bool:
    method = isup.Method("ModelReady", False, False)
    code, replies = isup.call(channel, method, pb.ModelReadyRequest(name=model).SerializeToString(), ADMIN)
    assert code == grpc.StatusCode.OK
    return pb.ModelReadyResponse.FromString(replies[0]).ready


def web(
    guarded: Guarded, method: str, path: str, body: bytes | None, token: str | None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(guarded.http_url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_every_http_route_takes_the_scope_of_its_grpc_method(guarded: Guarded) -> None:
    x = np.random.default_rng(8).standard_normal((1, 64)).astype(np.float32)
    infer = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.tolist()}]})
    routes = [  # every route of the HTTP face but the two health probes, and the gRPC method it stands for
        ("GET", "/v2", None, "ServerMetadata"),
        ("GET", "/v2/models/guarded", None, "ModelMetadata"),
        ("GET", "/v2/models/guarded/versions/1", None, "ModelMetadata"),
        ("GET", "/v2/models/guarded/ready", None, "ModelReady"),
        ("GET", "/v2/models/guarded/versions/1/ready", None, "ModelReady"),
        ("GET", "/v2/models/guarded/config", None, "ModelConfig"),
        ("GET", "/v2/models/guarded/versions/1/config", None, "ModelConfig"),
        ("GET", "/v2/models/stats", None, "ModelStatistics"),
        ("GET", "/v2/models/guarded/stats", None, "ModelStatistics"),
        ("GET", "/v2/models/guarded/versions/1/stats", None, "ModelStatistics"),
        ("POST", "/v2/models/guarded/infer", infer.encode(), "ModelInfer"),
        ("POST", "/v2/models/guarded/versions/1/infer", infer.encode(), "ModelInfer"),
        ("POST", "/v2/repository/index", b"{}", "RepositoryIndex"),
        ("POST", "/v2/repository/models/spare/load", b"{}", "RepositoryModelLoad"),
        ("POST", "/v2/repository/models/guarded/unload", b"{}", "RepositoryModelUnload"),
    ]
    assert {name for *_, name in routes} == {m.name for m in isup.oip_methods()} - {
        "ServerLive",
        "ServerReady",
        "ModelStreamInfer",
    }
    # The health probes need no token, like grpc.health.v1.
    assert web(guarded, "GET", "/v2/health/live", None, None)[0] == 200
    assert web(guarded, "GET", "/v2/health/ready", None, None)[0] == 200
    wanted = support.expected(guarded.module, x, guarded.min_rows)
    for method, path, body, name in routes:
        scope = REQUIRED_SCOPE[f"/{isup.SERVICE}/{name}"]
        for token in (None, WRONG):
            status, headers, answer = web(guarded, method, path, body, token)
            assert status == 401 and headers["www-authenticate"] == "Bearer", (path, token, answer)
            assert json.loads(answer)["error"] == "a valid bearer token is required"
        status, _, answer = web(guarded, method, path, body, READ)
        if scope == "read":
            assert status == 200, (path, answer)
        else:
            assert scope == "admin" and status == 403, (path, answer)
            assert json.loads(answer)["error"] == "this method needs an admin token"
            assert web(guarded, method, path, body, WRITE)[0] == 403, path
        if name == "ModelInfer":
            (output,) = json.loads(answer)["outputs"]
            assert np.array_equal(np.asarray(output["data"], dtype=np.float32).reshape(1, 10), wanted)
    # Nothing was loaded or unloaded by the refused calls; an admin token does both.
    assert web(guarded, "GET", "/v2/models/guarded/ready", None, READ)[0] == 200
    assert web(guarded, "GET", "/v2/models/spare/ready", None, READ)[0] == 400
    assert web(guarded, "POST", "/v2/repository/models/spare/load", b"{}", ADMIN)[0] == 200
    assert web(guarded, "GET", "/v2/models/spare/ready", None, READ)[0] == 200
    assert web(guarded, "POST", "/v2/repository/models/spare/unload", b"{}", ADMIN)[0] == 200
    assert web(guarded, "GET", "/v2/models/spare/ready", None, READ)[0] == 400


def test_every_inference_rpc_refuses_missing_wrong_and_weak_tokens(guarded: Guarded) -> None:
    methods = isup.oip_methods()
    bodies = payloads()
    assert sorted(m.name for m in methods) == sorted(bodies)  # a new RPC needs a payload here
    x = np.frombuffer(pb.ModelInferRequest.FromString(bodies["ModelInfer"]).raw_input_contents[0], np.float32)
    wanted = support.expected(guarded.module, x.reshape(1, 64), guarded.min_rows)
    with grpc.insecure_channel(guarded.address) as channel:
        assert ready(channel, "guarded") and not ready(channel, "spare")
        for method in methods:
            body = bodies[method.name]
            scope = REQUIRED_SCOPE[method.path]
            assert isup.call(channel, method, body, None)[0] == grpc.StatusCode.UNAUTHENTICATED, method.name
            assert isup.call(channel, method, body, WRONG)[0] == grpc.StatusCode.UNAUTHENTICATED, method.name
            code, replies = isup.call(channel, method, body, READ)
            if scope == "read":
                assert code == grpc.StatusCode.OK, method.name
                assert replies, method.name
            else:
                assert scope == "admin", method.name
                assert code == grpc.StatusCode.PERMISSION_DENIED, method.name
                assert isup.call(channel, method, body, WRITE)[0] == grpc.StatusCode.PERMISSION_DENIED, method.name
            if method.name == "ModelInfer":
                assert np.array_equal(isup.logits(replies[0]), wanted)
            if method.name == "ModelStreamInfer":
                streamed = pb.ModelStreamInferResponse.FromString(replies[0])
                assert streamed.error_message == ""
                assert np.array_equal(isup.logits(streamed.infer_response.SerializeToString()), wanted)

        # Nothing was loaded or unloaded by the refused calls.
        assert ready(channel, "guarded") and not ready(channel, "spare")
        assert isup.health(channel) == health_pb2.HealthCheckResponse.SERVING  # health needs no token

        # The same payloads do what they say with an admin token.
        load = isup.Method("RepositoryModelLoad", False, False)
        unload = isup.Method("RepositoryModelUnload", False, False)
        assert isup.call(channel, load, bodies["RepositoryModelLoad"], ADMIN)[0] == grpc.StatusCode.OK
        assert isup.call(channel, unload, bodies["RepositoryModelUnload"], ADMIN)[0] == grpc.StatusCode.OK
        assert ready(channel, "spare") and not ready(channel, "guarded")


# ------------------------------------------------------- a locked registry


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[support.Process]:
    proc = isup.start_registry(
        tmp_path_factory.mktemp("locked-registry"),
        auth_tokens=TOKENS,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca.cert),
    )
    yield proc
    proc.stop()


def tls_client(address: str, pki: Pki, token: str) -> BlockingRegistryClient:
    return BlockingRegistryClient(
        ChannelConfig(
            address,
            timeout=30,
            tls=True,
            root_certificates=pki.ca.cert.read_bytes(),
            certificate_chain=pki.client.cert.read_bytes(),
            private_key=pki.client.key.read_bytes(),
            token=token,
        )
    )


def test_inference_serves_and_follows_from_a_registry_that_wants_mutual_tls_and_a_token(
    locked_registry: support.Process, pki: Pki, tmp_path: Path
) -> None:
    writer = tls_client(locked_registry.address, pki, WRITE)
    try:
        _, v1 = support.register_torch(writer, "locked", support.MLP_ARCH, seed=4)
        tls = {
            "registry_ca_file": pki.ca.cert,
            "registry_cert_file": pki.client.cert,
            "registry_key_file": pki.client.key,
        }
        # A read token is all the inference service needs.
        proc = support.start_inference(
            locked_registry.address, tmp_path / "inference", models="locked", registry_token=READ, **tls
        )
        try:
            x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
            body = pb.ModelInferRequest(model_name="locked")
            body.inputs.add(name="input", datatype="FP32", shape=[1, 64])
            body.raw_input_contents.append(x.tobytes())
            infer = isup.Method("ModelInfer", False, False)
            with grpc.insecure_channel(proc.address) as channel:
                config = pb.ModelConfigResponse.FromString(
                    channel.unary_unary(f"/{isup.SERVICE}/ModelConfig")(
                        pb.ModelConfigRequest(name="locked").SerializeToString(), timeout=30
                    )
                ).config
                min_rows = int(config.parameters["min_execution_rows"].string_value)
                code, replies = isup.call(channel, infer, body.SerializeToString())
                assert code == grpc.StatusCode.OK
                assert np.array_equal(isup.logits(replies[0]), support.expected(v1, x, min_rows))
                # The event stream runs over the same mutual-TLS channel: an alias move is followed.
                v2_number, v2 = support.register_torch(writer, "locked", support.MLP_ARCH, seed=6)

                def serving_v2() -> bool:
                    code, replies = isup.call(channel, infer, body.SerializeToString())
                    assert code == grpc.StatusCode.OK
                    return pb.ModelInferResponse.FromString(replies[0]).model_version == str(v2_number)

                isup.eventually(serving_v2, "the alias move followed over mutual TLS")
                code, replies = isup.call(channel, infer, body.SerializeToString())
                assert np.array_equal(isup.logits(replies[0]), support.expected(v2, x, min_rows))
        finally:
            assert proc.stop() == 0, proc.log()[-2000:]

        # Without its client certificate, or with a wrong token, the registry gives it nothing.
        for label, extra in (
            ("no client certificate", {"registry_token": READ, "registry_ca_file": pki.ca.cert}),
            ("wrong token", {"registry_token": WRONG, **tls}),
        ):
            proc = support.start_inference(
                locked_registry.address, tmp_path / label.replace(" ", "-"), models="locked", **extra
            )
            try:
                with grpc.insecure_channel(proc.address) as channel:
                    code, replies = isup.call(
                        channel,
                        isup.Method("ModelReady", False, False),
                        pb.ModelReadyRequest(name="locked").SerializeToString(),
                    )
                    assert code == grpc.StatusCode.OK
                    assert not pb.ModelReadyResponse.FromString(replies[0]).ready, label
                    assert isup.call(channel, infer, body.SerializeToString())[0] == grpc.StatusCode.UNAVAILABLE
            finally:
                assert proc.stop() == 0, proc.log()[-2000:]
    finally:
        writer.close()


def test_the_http_port_serves_over_mutual_tls_with_the_grpc_servers_files(pki: Pki, tmp_path: Path) -> None:
    proc = support.start_inference(
        "127.0.0.1:1",  # no registry: nothing is served, the listeners are what is looked at
        tmp_path / "inference",
        follow="false",
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
    )
    try:
        assert proc.http_url.startswith("https://127.0.0.1:"), proc.lines
        url = proc.http_url + "/v2"

        def context(client: Pair | None) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
            if client is not None:
                ctx.load_cert_chain(str(client.cert), str(client.key))
            return ctx

        with urllib.request.urlopen(url, timeout=30, context=context(pki.client)) as response:
            assert json.loads(response.read())["name"] == "maas-inference"
        for label, client in (("no client certificate", None), ("another CA's certificate", pki.stranger)):
            with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
                with urllib.request.urlopen(url, timeout=30, context=context(client)) as response:
                    response.read()
                pytest.fail(f"answered with {label}")
        plain = url.replace("https://", "http://")
        with (
            pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)),
            urllib.request.urlopen(plain, timeout=30) as response,
        ):
            response.read()
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]
