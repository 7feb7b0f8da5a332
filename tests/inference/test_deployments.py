"""Inference replicas converge to the registry's deployments (issue 14.2), on SQLite and PostgreSQL.

Real processes: one registry on each backend, two inference replicas as their
own processes, the installed `maas` command for `maas deployments show`, and
tritonclient for the Open Inference Protocol. The replicas resync only every
hour, so what they serve comes from listing at start and from events: a
replica started after the deployments exist, or restarted, serves them with
no setting; a deployment created or changed reaches both; RepositoryModelLoad
on one writes a deployment that the other serves; with `serve_alias` a model
moved to production is served under its own name with no load at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from maas.common.errors import NotFound
from maas.v1 import registry_pb2 as rpb
from tests.cli.support import maas
from tests.inference import support
from tests.inference.test_late_models import eventually

X = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)


def scaled(registry: BlockingRegistryClient, model: str, factor: float, alias: str | None) -> tuple[int, np.ndarray]:
    """A version that answers input * factor: which version answered shows in the numbers."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "factor"], ["output"])],
        "scaled",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 64])],
        initializer=[numpy_helper.from_array(np.array([factor], np.float32), "factor")],
    )
    data = support.onnx_bytes(graph)
    version = support.register_onnx(registry, model, data, support.IDENTITY_SIGNATURE, alias=alias)
    return version, X * np.float32(factor)


def replica(registry: str, work: Path, name: str) -> support.Process:
    return support.start_inference(
        registry,
        work / name,
        replica_id=name,
        serve_alias="production",
        resync_seconds=3600,  # only the start, the events and reconnects may bring deployments in
        http="false",
    )


def answer(client: tc.InferenceServerClient, model: str, version: str = "") -> tuple[str, np.ndarray]:
    tensor = tc.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(model, [tensor], model_version=version)
    return result.get_response().model_version, result.as_numpy("output")


def serves(client: tc.InferenceServerClient, model: str, version: str, expected: np.ndarray) -> bool:
    try:
        got, out = answer(client, model)
    except InferenceServerException:
        return False
    return got == version and np.array_equal(out, expected)


def shown(registry: str, name: str) -> dict[str, Any]:
    result = maas("deployments", "show", name, "--json", env={"MAAS_REGISTRY_ADDRESS": registry, "MAAS_TIMEOUT": "30"})
    assert result.rc == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def states(registry: str, name: str) -> dict[str, tuple[int, str]]:
    doc = shown(registry, name)
    return {r["replica"]: (int(r["generation"]), doc["replica_states"][r["replica"]]) for r in doc.get("replicas", [])}


def converged(registry: str, name: str, generation: int, replicas: set[str]) -> bool:
    return states(registry, name) == {r: (generation, "converged") for r in replicas}


def test_replicas_converge_to_deployments(
    db_registry_process: support.Process, db_registry: BlockingRegistryClient, tmp_path: Path
) -> None:
    address = db_registry_process.address
    registry = db_registry
    _, digits1 = scaled(registry, "digits", 1.0, alias="production")
    _, digits2 = scaled(registry, "digits", 2.0, alias=None)
    _, other1 = scaled(registry, "other", 5.0, alias=None)

    a = replica(address, tmp_path, "replica-a")
    b: support.Process | None = None
    clients: list[tc.InferenceServerClient] = []
    try:
        ca = tc.InferenceServerClient(a.address)
        clients.append(ca)
        # The default policy: digits@production is served under its name, with no load call.
        assert serves(ca, "digits", "1", digits1)

        # A deployment created in the registry reaches the running replica: another served name, pinned.
        registry.create_deployment("live", rpb.DeploymentSpec(targets=[rpb.DeploymentTarget(ref="digits/2")]))
        eventually(lambda: serves(ca, "live", "2", digits2), "live served by replica-a")
        # RepositoryModelLoad on replica-a declares a deployment: the registry has it, with the load's config.
        ca.load_model("other", config=json.dumps({"max_batch_size": 4}))
        written = registry.get_deployment("other")
        assert [t.ref for t in written.spec.targets] == ["other@latest"] and written.spec.options.max_batch_size == 4
        assert serves(ca, "other", "1", other1)

        # A replica started after all this serves it from the start (no event, no setting, no load).
        b = replica(address, tmp_path, "replica-b")
        cb = tc.InferenceServerClient(b.address)
        clients.append(cb)
        assert (
            serves(cb, "digits", "1", digits1) and serves(cb, "live", "2", digits2) and serves(cb, "other", "1", other1)
        )
        assert cb.get_model_config("other").config.max_batch_size == 4

        # An update reaches both: two targets; the one of weight 0 takes no requests but is loaded, warmed,
        # followed and reached by its version.
        registry.update_deployment(
            "live",
            rpb.DeploymentSpec(
                targets=[
                    rpb.DeploymentTarget(ref="digits/2", weight=100),
                    rpb.DeploymentTarget(ref="digits@production", weight=0),
                ]
            ),
        )
        eventually(lambda: converged(address, "live", 2, {"replica-a", "replica-b"}), "both at generation 2")
        for client in (ca, cb):
            assert answer(client, "live")[0] == "2"
            version, out = answer(client, "live", "1")
            assert version == "1" and np.array_equal(out, digits1)

        # Train/push, then promote: served under the model's name (and as live's production target) everywhere.
        _, digits3 = scaled(registry, "digits", 3.0, alias=None)
        registry.set_alias("digits", "production", 3)
        for client in (ca, cb):
            eventually(lambda c=client: serves(c, "digits", "3", digits3), "digits@production -> 3 served")  # type: ignore[misc]
            eventually(lambda c=client: answer(c, "live", "3")[0] == "3", "live's production target at 3")  # type: ignore[misc]
        report = {r["replica"]: r for r in shown(address, "live")["replicas"]}
        assert {(t["ref"], int(t["version"]), t["state"]) for t in report["replica-b"]["targets"]} == {
            ("digits/2", 2, "TARGET_STATE_READY"),
            ("digits@production", 3, "TARGET_STATE_READY"),
        }

        # A clean stop removes the replica's reports; restarted, it converges again with no setting.
        assert a.stop() == 0, a.log()[-2000:]
        assert set(states(address, "live")) == {"replica-b"}
        a = replica(address, tmp_path, "replica-a")
        ca = tc.InferenceServerClient(a.address)
        clients.append(ca)
        assert serves(ca, "digits", "3", digits3) and serves(ca, "other", "1", other1)
        assert answer(ca, "live")[0] == "2" and answer(ca, "live", "3")[0] == "3"
        eventually(lambda: converged(address, "live", 2, {"replica-a", "replica-b"}), "both reported again")

        # A generation whose only target cannot be built: each replica says why, and goes on serving the last one.
        support.register_onnx(registry, "broken", support.onnx_unknown_op(), support.IDENTITY_SIGNATURE, alias=None)
        registry.update_deployment("live", rpb.DeploymentSpec(targets=[rpb.DeploymentTarget(ref="broken/1")]))
        failed = {"replica-a": (3, "failed"), "replica-b": (3, "failed")}
        eventually(lambda: states(address, "live") == failed, "both report generation 3 failed")
        report = {r["replica"]: r for r in shown(address, "live")["replicas"]}
        (target,) = [t for t in report["replica-a"]["targets"] if t["ref"] == "broken/1"]
        assert target["state"] == "TARGET_STATE_FAILED" and "broken/1 cannot be served" in target["reason"]
        assert all(answer(client, "live")[0] == "2" for client in (ca, cb))

        # RepositoryModelUnload deletes the deployment: the other replica stops serving it too.
        cb.unload_model("other")
        with pytest.raises(NotFound):
            registry.get_deployment("other")
        eventually(lambda: not ca.is_model_ready("other"), "other unloaded on replica-a")
        assert registry.resolve("other@latest").version == 1  # the model itself is untouched
    finally:
        for client in clients:
            client.close()
        for proc in (a, b):
            if proc is not None:
                proc.stop()


def test_replica_ids_default_to_host_and_port() -> None:
    from maas.inference.settings import InferenceSettings, replica_id

    assert replica_id(InferenceSettings(replica_id="pod-7")) == "pod-7"
    fixed = replica_id(InferenceSettings(port=8001))
    assert fixed.endswith(":8001") and fixed == replica_id(InferenceSettings(port=8001))  # stable across restarts
    assert replica_id(InferenceSettings(port=0)).rsplit("-", 1)[1].isdigit()  # a free port: the process id
    with pytest.raises(ValueError):
        InferenceSettings(replica_id="../x")
    with pytest.raises(ValueError):
        InferenceSettings(serve_alias="Prod uction")
