"""`maas optimize`: int8 versions and ORT files derived from a READY version, through the real suite.

The session's trained digits MLP is quantized with its ORT file; the new
version is linked to its parent, measured on the parent job's validation
split (the parent ONNX scores there exactly the val_accuracy training
recorded), and what is downloaded runs outside maas to the outputs the
inference service answers. A safetensors-only version with no training run
needs --dataset and is exported to ONNX first; refusals are synchronous with
their gRPC status and leave nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format
from sklearn.datasets import load_digits

from maas.client.registry import Registry
from maas.client.trainer import Trainer
from maas.common import errors
from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as tpb
from tests.cli.conftest import Suite
from tests.cli.support import assert_one_line_error


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data.reshape(-1, 1, 8, 8).astype(np.float32), data.target


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def served(suite: Suite, ref: str, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "batch.npy", x)
    answer = suite.maas("predict", ref, "-i", str(tmp_path / "batch.npy"), "--raw", "--json")
    assert answer.rc == 0, answer.stderr
    return np.asarray(answer.json()["outputs"]["logits"]["data"], dtype=np.float32).reshape(len(x), -1)


def download(suite: Suite, ref: str, fmt: str, dest: Path) -> Path:
    got = suite.maas("versions", "download", ref, "--format", fmt, "-o", str(dest), "--json")
    assert got.rc == 0, got.stderr
    return dest


def test_int8_and_ort_from_the_trained_version(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    parent = trained["result"]["version"]
    ref = f"digits/{parent['version']}"
    result = suite.maas("optimize", ref, "--quantize", "int8", "--format", "ort", "--json")
    assert result.rc == 0, result.stderr
    final = result.json_lines()[-1]
    assert final["ok"], final
    version = final["version"]
    new_ref = f"digits/{version['version']}"
    assert version["status"] == "VERSION_STATUS_READY" and version["version"] != parent["version"]
    assert version["format"] == "MODEL_FORMAT_ONNX"
    assert [a["format"] for a in version["artifacts"]] == ["MODEL_FORMAT_ONNX", "MODEL_FORMAT_ORT"]
    assert version["tags"]["parent"] == ref and version["tags"]["quantization"] == "int8"
    assert version["tags"]["quantization_method"] == "dynamic"  # an MLP: no convolutions
    assert version["architecture"]["labels"] == parent["architecture"]["labels"]
    metrics = version["metrics"]
    # The parent ONNX on the rebuilt split scores what training measured there: the same rows.
    assert metrics["parent_val_accuracy"] == pytest.approx(parent["metrics"]["val_accuracy"], abs=1e-9)
    assert metrics["accuracy_delta"] == pytest.approx(metrics["val_accuracy"] - metrics["parent_val_accuracy"])
    assert abs(metrics["accuracy_delta"]) <= 0.05
    assert 0 < metrics["size_ratio"] < 1
    assert metrics["latency_ratio"] > 0
    assert 0 <= metrics["ort_max_abs_diff"] <= 1e-3
    job = final["job"]
    assert job["state"] == "JOB_STATE_SUCCEEDED" and job["spec"]["optimize"]["source"] == ref
    logs = " ".join(e["log"]["message"] for e in result.json_lines()[:-1] if "log" in e)
    assert "size ratio" in logs and "ORT format" in logs

    int8 = download(suite, new_ref, "onnx", tmp_path / "int8.onnx")
    edge = download(suite, new_ref, "ort", tmp_path / "int8.ort")
    base = download(suite, ref, "onnx", tmp_path / "parent.onnx")
    assert edge.read_bytes()[4:8] == b"ORTM"
    assert int8.stat().st_size == pytest.approx(metrics["size_ratio"] * base.stat().st_size, rel=1e-9)

    x, y = digits()
    local_int8, local_ort, local_parent = run_onnx(int8, x), run_onnx(edge, x), run_onnx(base, x)
    np.testing.assert_allclose(local_ort, local_int8, atol=1e-3)
    assert (local_ort.argmax(1) == local_int8.argmax(1)).mean() >= 0.99
    assert (local_int8.argmax(1) == local_parent.argmax(1)).mean() >= 0.95
    assert abs((local_int8.argmax(1) == y).mean() - (local_parent.argmax(1) == y).mean()) <= 0.05

    # The inference service serves the int8 version with onnxruntime, as onnxruntime runs it here. Dynamic
    # quantization takes each activation's range over the whole batch, so both run the same batch (32 rows:
    # what the service runs at once, unsplit).
    rows = x[:32]
    for serve, asked, expected in ((new_ref, new_ref, run_onnx(int8, rows)), (ref, ref, local_parent[:32])):
        loaded = suite.maas("serving", "load", serve, "--json")  # last: the parent, served as before
        assert loaded.rc == 0, loaded.stderr
        np.testing.assert_allclose(served(suite, asked, rows, tmp_path), expected, atol=1e-5)


def test_safetensors_only_version_needs_a_dataset_and_gets_an_ort_file(
    suite: Suite, trained: dict[str, Any], tmp_path: Path
) -> None:
    """No ONNX artifact and no training run: the weights are exported first, the data set comes from --dataset."""
    parent = trained["result"]["version"]
    with Registry(suite.registry.address) as registry:
        registry.download("digits", parent["version"], tmp_path / "w.safetensors", format="safetensors")
        pushed = registry.push("digits-plain", tmp_path / "w.safetensors", architecture=parent["architecture"])
    ref = f"digits-plain/{pushed.version}"
    assert [a.format for a in pushed.artifacts] == [rpb.MODEL_FORMAT_SAFETENSORS]

    refused = suite.maas("optimize", ref, "--format", "ort")
    assert_one_line_error(refused)
    assert "--dataset" in refused.stderr

    result = suite.maas("optimize", ref, "--format", "ort", "--dataset", "digits", "--json")
    assert result.rc == 0, result.stderr
    final = result.json_lines()[-1]
    assert final["ok"] and final["version"]["version"] == pushed.version  # added to the source itself
    assert [a["format"] for a in final["version"]["artifacts"]] == ["MODEL_FORMAT_SAFETENSORS", "MODEL_FORMAT_ORT"]
    assert 0 <= float(final["version"]["tags"]["ort_max_abs_diff"]) <= 1e-3
    with Registry(suite.registry.address) as registry:
        versions = list(registry.versions("digits-plain"))
    assert [v.version for v in versions] == [pushed.version]  # no new version

    edge = download(suite, ref, "ort", tmp_path / "plain.ort")
    base = download(suite, f"digits/{parent['version']}", "onnx", tmp_path / "parent.onnx")
    x, _ = digits()
    np.testing.assert_allclose(run_onnx(edge, x), run_onnx(base, x), atol=1e-3)

    again = suite.maas("optimize", ref, "--format", "ort", "--dataset", "digits")
    assert_one_line_error(again)  # it has an ORT artifact now: ALREADY_EXISTS, synchronously


def test_refusals_are_synchronous_and_register_nothing(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    parent = trained["result"]["version"]
    ref = f"digits/{parent['version']}"
    with Registry(suite.registry.address) as registry:
        before = sorted(v.version for v in registry.versions("digits"))
        registry.download("digits", parent["version"], tmp_path / "w.safetensors", format="safetensors")
        wrong = {**parent["architecture"], "args": {**parent["architecture"]["args"], "hidden": [7]}}
        with pytest.raises(errors.MaasError):
            registry.push("digits-broken", tmp_path / "w.safetensors", architecture=wrong)
        (broken,) = list(registry.versions("digits-broken"))
        assert broken.status == rpb.VERSION_STATUS_FAILED

    with Trainer(suite.trainer.address) as trainer:
        cases: list[tuple[type[errors.MaasError], dict[str, Any]]] = [
            (errors.NotFound, {"source": "no-such-model/1", "quantize": "int8"}),
            (errors.NotFound, {"source": f"digits/{parent['version'] + 999}", "quantize": "int8"}),
            (errors.InvalidArgument, {"source": "digits/x", "quantize": "int8"}),
            (errors.InvalidArgument, {"source": ref, "quantize": "int4"}),
            (errors.InvalidArgument, {"source": ref, "quantize": "int8", "method": "magic"}),
            (errors.InvalidArgument, {"source": ref, "formats": ["tflite"]}),
            (errors.InvalidArgument, {"source": ref}),
            (errors.InvalidArgument, {"source": ref, "formats": ["ort"], "promotion": {"alias": "edge"}}),
            (errors.InvalidArgument, {"source": ref, "quantize": "int8", "promotion": {"alias": "e", "metric": "x"}}),
            (errors.FailedPrecondition, {"source": f"digits-broken/{broken.version}", "quantize": "int8"}),
            (errors.InvalidArgument, {"source": ref, "quantize": "int8", "dataset": {"name": "nope"}}),
        ]
        for error, doc in cases:
            with pytest.raises(error):
                trainer.optimize(doc)
        jobs = [j for j in trainer.jobs() if j.spec.HasField("optimize")]
        assert all(j.spec.optimize.source != f"digits-broken/{broken.version}" for j in jobs)

        # An archived source is refused.
        with Registry(suite.registry.address) as registry:
            shelved = registry.push("digits-shelved", tmp_path / "w.safetensors", architecture=parent["architecture"])
            registry.archive_version("digits-shelved", shelved.version)
        with pytest.raises(errors.FailedPrecondition):
            trainer.optimize(f"digits-shelved/{shelved.version}", formats=["ort"], dataset={"name": "digits"})

        # The same idempotency key returns the first job; with another request it is refused.
        first = trainer.optimize(ref, quantize="int8", idempotency_key="opt-key-1")
        assert trainer.optimize(ref, quantize="int8", idempotency_key="opt-key-1").job_id == first.job_id
        with pytest.raises(errors.FailedPrecondition):
            trainer.optimize(ref, quantize="int8", method="static", idempotency_key="opt-key-1")
        done = trainer.wait(first.job_id)
        assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
        doc = json_format.MessageToDict(done.spec, preserving_proto_field_name=True)
        assert doc["optimize"]["source"] == ref and doc["dataset"]["name"] == "digits"

    with Registry(suite.registry.address) as registry:
        after = sorted(v.version for v in registry.versions("digits"))
    assert after == [*before, done.registered_version]  # the refusals registered nothing

    bad = suite.maas("optimize", "no-such-model/1", "--quantize", "int8")
    assert_one_line_error(bad)
    usage = suite.maas("optimize", ref, "--quantize", "int4")
    assert usage.rc == 2


def test_a_conv_net_is_quantized_statically_and_promoted_by_its_rule(suite: Suite, tmp_path: Path) -> None:
    trained = suite.maas(
        "train",
        *("--model", "lenet", "--dataset", "digits", "--epochs", "4", "--batch-size", "32", "--lr", "0.05"),
        *("--seed", "3", "--register-as", "digits-cnn", "--watch", "--json"),
    )
    assert trained.rc == 0, trained.stderr
    parent = trained.json_lines()[-1]["version"]
    ref = f"digits-cnn/{parent['version']}"

    shape = suite.maas("optimize", ref, "--quantize", "int8", "--dataset", "fake")
    assert_one_line_error(shape)  # 3x32x32 images for a 1x8x8 network: refused before anything runs
    assert "[1, 8, 8]" in shape.stderr

    result = suite.maas(
        "optimize",
        *(ref, "--quantize", "int8", "--format", "ort", "--calibration-batches", "4"),
        *("--promote", "edge", "--metric", "accuracy_delta", "--threshold", "-0.05", "--json"),
    )
    assert result.rc == 0, result.stderr
    final = result.json_lines()[-1]
    version, job = final["version"], final["job"]
    assert version["tags"]["quantization_method"] == "static" and version["tags"]["parent"] == ref
    metrics = version["metrics"]
    assert metrics["parent_val_accuracy"] == pytest.approx(parent["metrics"]["val_accuracy"], abs=1e-9)
    assert metrics["accuracy_delta"] >= -0.05 and 0 < metrics["size_ratio"] < 1 and metrics["latency_ratio"] > 0
    assert job["promoted_alias"] == "edge" and "promoted to edge" in final["summary"]
    logs = " ".join(e["log"]["message"] for e in result.json_lines()[:-1] if "log" in e)
    assert "calibrated on 4 batches" in logs and "per channel" in logs
    with Registry(suite.registry.address) as registry:
        assert registry.resolve("digits-cnn@edge").version == version["version"]

    x, _ = digits()
    int8 = download(suite, f"digits-cnn/{version['version']}", "onnx", tmp_path / "cnn.int8.onnx")
    edge = download(suite, f"digits-cnn/{version['version']}", "ort", tmp_path / "cnn.ort")
    base = download(suite, ref, "onnx", tmp_path / "cnn.onnx")
    np.testing.assert_allclose(run_onnx(edge, x), run_onnx(int8, x), atol=1e-3)
    assert (run_onnx(int8, x).argmax(1) == run_onnx(base, x).argmax(1)).mean() >= 0.95
