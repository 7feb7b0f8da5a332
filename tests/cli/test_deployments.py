"""`maas deploy` and `maas deployments ls|show|rm|promote|rollback`: the real CLI against a real registry process, on SQLite
and PostgreSQL; and how the client turns REF[:PERCENT] into a spec."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from maas.cli.main import main
from maas.client import deployment_spec
from maas.client.deployments import promoted, rolled_back
from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import BlockingRegistryClient
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.v1 import registry_pb2 as pb
from tests.cli.support import Result, assert_one_line_error, maas
from tests.cli.test_lifecycle import ready
from tests.processes import ServiceProcess, registry_env, start_service, stop_all


@pytest.fixture
def registry(db_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = start_service(
        "maas.registry",
        registry_env(db_url, tmp_path / "artifacts", MAAS_REGISTRY_GRACE_SECONDS="1"),
        tmp_path / "registry.log",
    )
    try:
        yield proc
    finally:
        stop_all([proc])


@pytest.fixture
def client(registry: ServiceProcess, tmp_path: Path) -> Iterator[BlockingRegistryClient]:
    c = BlockingRegistryClient(ChannelConfig(registry.address, timeout=30))
    for _ in range(3):
        ready(c, "digits", tmp_path)
    c.set_alias("digits", "production", 1)
    c.set_alias("digits", "staging", 3)
    yield c
    c.close()


def run(registry: ServiceProcess, *args: str) -> Result:
    """The CLI's own entry point in this process: what the installed command runs, without a new interpreter
    per call (the first deploy of each test runs the installed command itself)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*args, "--registry", registry.address, "--timeout", "30"])
    return Result(rc, out.getvalue(), err.getvalue())


def test_refusals_then_deploy_show_redeploy_rm_promote_and_roll_back(
    registry: ServiceProcess, client: BlockingRegistryClient
) -> None:
    # Refusals first: one line each, and nothing stored.
    refusals = {
        ("deploy", "d", "--target", "absent@production"): "not found",
        ("deploy", "d", "--target", "digits@canary"): "not found",
        ("deploy", "d", "--target", "digits@production", "--canary", "digits/2"): "invalid argument",
        ("deploy", "d", "--target", "digits@production:95", "--canary", "digits/2:10"): "invalid argument",
        ("deploy", "d", "--target", "digits@production", "--shadow", "digits@production"): "invalid argument",
        ("deploy", "d", "--target", "digits@production", "--device", "tpu"): "invalid argument",
        ("deploy", "../d", "--target", "digits@production"): "invalid argument",
    }
    for args, kind in refusals.items():
        result = run(registry, *args)
        assert_one_line_error(result)
        assert result.stderr.startswith(f"maas: {kind}:"), (args, result.stderr)
    assert run(registry, "deployments", "ls", "--json").json() == []  # nothing was stored

    created = maas(
        "deploy",
        "digits",
        "--target",
        "digits@production",
        "--canary",
        "digits/2:10",
        "--shadow",
        "digits@staging:25",
        "--max-batch-size",
        "8",
        "--max-queue-delay-us",
        "0",
        "--device",
        "cpu",
        "--format",
        "onnx",
        "--preferred-batch-size",
        "4",
        "--preferred-batch-size",
        "2",
        "--max-queue-size",
        "100",
        "--json",
        env={"MAAS_REGISTRY_ADDRESS": registry.address, "MAAS_TIMEOUT": "30"},
        timeout=60,
    )
    assert created.rc == 0, created.stderr
    doc = created.json()
    assert doc["generation"] == 1
    assert doc["spec"]["targets"] == [{"ref": "digits@production", "weight": 90}, {"ref": "digits/2", "weight": 10}]
    assert doc["spec"]["shadow"] == {"ref": "digits@staging", "sample_percent": 25}
    assert doc["spec"]["options"] == {
        "max_batch_size": 8,
        "max_queue_delay_us": 0,
        "instances": 0,
        "device": "cpu",
        "format": "MODEL_FORMAT_ONNX",
        "preferred_batch_sizes": [2, 4],
        "max_queue_size": 100,
    }

    # Two replicas report: one done, one still loading the canary.
    for replica, canary_state in (("replica-a", pb.TARGET_STATE_READY), ("replica-b", pb.TARGET_STATE_LOADING)):
        client.report_deployment_status(
            "digits",
            pb.ReplicaStatus(
                replica=replica,
                generation=1,
                targets=[
                    pb.TargetStatus(ref="digits@production", version=1, state=pb.TARGET_STATE_READY),
                    pb.TargetStatus(ref="digits/2", version=2, state=canary_state),
                    pb.TargetStatus(ref="digits@staging", version=3, state=pb.TARGET_STATE_READY, shadow=True),
                ],
            ),
        )
    listed = run(registry, "deployments", "ls")
    assert listed.rc == 0, listed.stderr
    assert "digits@production 90%, digits/2 10%" in listed.stdout and "2/2 at generation 1" in listed.stdout
    shown = run(registry, "deployments", "show", "digits", "--json")
    assert shown.rc == 0, shown.stderr
    doc = shown.json()
    assert doc["resolved"] == {"digits@production": 1, "digits/2": 2, "digits@staging": 3}
    assert doc["replica_states"] == {"replica-a": "converged", "replica-b": "loading"}
    assert [(r["replica"], r["generation"]) for r in doc["replicas"]] == [("replica-a", 1), ("replica-b", 1)]
    text = run(registry, "deployments", "show", "digits").stdout
    assert "version 1" in text and "digits/2 (v2) loading" in text and "max batch 8" in text

    # Redeploying replaces the whole spec, conditionally on the generation read.
    moved = run(registry, "deploy", "digits", "--target", "digits/3", "--generation", "1", "--json")
    assert moved.rc == 0, moved.stderr
    assert moved.json()["generation"] == 2
    assert moved.json()["spec"]["targets"] == [{"ref": "digits/3", "weight": 100}]
    assert "shadow" not in moved.json()["spec"]
    stale = run(registry, "deploy", "digits", "--target", "digits/1", "--generation", "1")
    assert_one_line_error(stale)
    assert stale.stderr.startswith("maas: aborted:")
    assert client.get_deployment("digits").generation == 2
    # Both replicas are behind now.
    states = run(registry, "deployments", "show", "digits", "--json").json()["replica_states"]
    assert states == {"replica-a": "behind", "replica-b": "behind"}

    removed = run(registry, "deployments", "rm", "digits", "--generation", "2", "--json")
    assert removed.rc == 0, removed.stderr
    assert removed.json() == {"deployment": "digits", "deleted": True}
    gone = run(registry, "deployments", "show", "digits")
    assert_one_line_error(gone)
    assert gone.stderr.startswith("maas: not found:")
    assert run(registry, "deployments", "ls", "--json").json() == []
    promote_and_roll_back(registry, client)


def promote_and_roll_back(registry: ServiceProcess, client: BlockingRegistryClient) -> None:
    """A canary is promoted, or rolled back, in one command each (on the same registry as the test above)."""
    canary = ("deploy", "digits", "--target", "digits@production", "--canary", "digits/2:10", "--shadow", "digits/3")
    assert run(registry, *canary).rc == 0  # generation 1 (the deployment was deleted above)
    promoted_ = run(registry, "deployments", "promote", "digits", "--json")
    assert promoted_.rc == 0, promoted_.stderr
    doc = promoted_.json()
    assert doc["generation"] == 2 and doc["spec"]["targets"] == [{"ref": "digits/2", "weight": 100}]
    assert doc["spec"]["shadow"] == {"ref": "digits/3", "sample_percent": 100}  # the shadow stays
    alone = run(registry, "deployments", "rollback", "digits")  # one target: nothing to roll back
    assert_one_line_error(alone)
    assert alone.stderr.startswith("maas: failed precondition:") and "digits/2" in alone.stderr

    assert run(registry, *canary).rc == 0  # generation 3: the canary again
    stale = run(registry, "deployments", "rollback", "digits", "--generation", "2")
    assert_one_line_error(stale)
    assert stale.stderr.startswith("maas: aborted:")
    wrong = run(registry, "deployments", "rollback", "digits", "--target", "digits/3")  # the shadow is no target
    assert_one_line_error(wrong)
    assert wrong.stderr.startswith("maas: invalid argument:")
    back = run(registry, "deployments", "rollback", "digits", "--generation", "3")
    assert back.rc == 0, back.stderr
    assert back.stdout.strip() == "deployment digits at generation 4: digits@production 100%; shadow digits/3"
    assert [(t.ref, t.weight) for t in client.get_deployment("digits").spec.targets] == [("digits@production", 100)]


def test_promotion_and_rollback_of_a_spec() -> None:
    spec = deployment_spec(["digits@production:60", "digits/2:10", "digits/3:30"], shadow="digits@staging:5")
    assert targets(promoted(spec)) == [("digits/2", 100)]  # the lightest is the canary
    assert targets(promoted(spec, "digits/3")) == [("digits/3", 100)]
    assert targets(rolled_back(spec)) == [("digits@production", 70), ("digits/3", 30)]
    assert targets(rolled_back(spec, "digits@production")) == [("digits/2", 10), ("digits/3", 90)]
    assert promoted(spec).shadow == spec.shadow and rolled_back(spec).options == spec.options
    assert targets(spec) == [("digits@production", 60), ("digits/2", 10), ("digits/3", 30)]  # unchanged
    with pytest.raises(InvalidArgument):
        promoted(deployment_spec(["digits/1:50", "digits/2:50"]))  # which one is the canary?
    with pytest.raises(InvalidArgument):
        rolled_back(spec, "digits/9")
    with pytest.raises(FailedPrecondition):
        promoted(deployment_spec(["digits/1"]))


def targets(spec: pb.DeploymentSpec) -> list[tuple[str, int]]:
    return [(t.ref, t.weight) for t in spec.targets]


def test_targets_without_a_weight_share_what_is_left() -> None:
    assert targets(deployment_spec(["digits@production"])) == [("digits@production", 100)]
    assert targets(deployment_spec(["digits@production", "digits/7:10"])) == [
        ("digits@production", 90),
        ("digits/7", 10),
    ]
    assert targets(deployment_spec(["a@production", "b@production", "c@production"])) == [
        ("a@production", 34),
        ("b@production", 33),
        ("c@production", 33),
    ]
    # All weighted: sent as given (the registry checks the sum).
    assert targets(deployment_spec(["a/1:70", "a/2:20"])) == [("a/1", 70), ("a/2", 20)]
    shadowed = deployment_spec(["a@production"], shadow="a@staging:5", max_queue_delay_us=0, format="ONNX")
    assert (shadowed.shadow.ref, shadowed.shadow.sample_percent) == ("a@staging", 5)
    assert shadowed.options.HasField("max_queue_delay_us") and shadowed.options.format == pb.MODEL_FORMAT_ONNX
    assert not deployment_spec(["a@production"]).HasField("shadow")
    for bad in (["a@production:x"], ["a@production:-5"], ["a@production:1000"], ["a/1:95", "a/2:10", "a/3"]):
        with pytest.raises(InvalidArgument):
            deployment_spec(bad)
    with pytest.raises(InvalidArgument):
        deployment_spec(["a@production"], format="pickle")
