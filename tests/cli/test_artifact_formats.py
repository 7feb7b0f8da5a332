"""What the trainer registers carries a checked ONNX export beside its safetensors weights.

Through the real suite: the session's trained digits MLP has both artifacts and
the check's difference; `maas versions download --format onnx` gives a file
onnxruntime runs outside maas to the outputs the service answers; a trainer
whose tolerance no export can meet registers a READY version from safetensors
alone, saying why.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_digits

from maas.client.registry import Registry
from maas.v1 import registry_pb2 as rpb
from tests.cli.conftest import Suite
from tests.cli.support import assert_one_line_error
from tests.processes import start_service


def digits_batch(rows: int = 40) -> np.ndarray:
    return load_digits().data[:rows].reshape(-1, 1, 8, 8).astype(np.float32)


def test_trained_version_has_a_checked_onnx_artifact(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    version = trained["result"]["version"]["version"]
    shown = suite.maas("versions", "show", f"digits/{version}", "--json")
    assert shown.rc == 0, shown.stderr
    doc = shown.json()
    assert [a["format"] for a in doc["artifacts"]] == ["MODEL_FORMAT_SAFETENSORS", "MODEL_FORMAT_ONNX"]
    assert doc["artifacts"][0]["sha256"] == doc["sha256"]
    assert 0 <= doc["metrics"]["onnx_max_abs_diff"] < 1e-4
    assert doc["tags"]["onnx_export"] == "ok"
    onnx_sha = doc["artifacts"][1]["sha256"]

    human = suite.maas("versions", "show", f"digits/{version}")
    assert "onnx" in human.stdout and onnx_sha[:12] in human.stdout

    out = tmp_path / "digits.onnx"
    got = suite.maas("versions", "download", f"digits/{version}", "--format", "onnx", "-o", str(out), "--json")
    assert got.rc == 0, got.stderr
    assert got.json()["format"] == "onnx" and got.json()["sha256"] == onnx_sha
    assert hashlib.sha256(out.read_bytes()).hexdigest() == onnx_sha

    # Run outside maas, and compare with what the service answers for the same rows.
    x = digits_batch()
    np.save(tmp_path / "batch.npy", x)
    loaded = suite.maas("serving", "load", "digits", "--json")
    assert loaded.rc == 0, loaded.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (local,) = session.run(None, {"input": x})
    served = suite.maas("predict", f"digits/{version}", "-i", str(tmp_path / "batch.npy"), "--raw", "--json")
    assert served.rc == 0, served.stderr
    np.testing.assert_allclose(np.asarray(served.json()["outputs"]["logits"]["data"]), local, atol=1e-5)

    missing = suite.maas("versions", "download", f"digits/{version}", "--format", "ort", "-o", str(tmp_path / "x"))
    assert_one_line_error(missing)
    assert not (tmp_path / "x").exists()


def test_clients_download_a_chosen_format(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    version = trained["result"]["version"]["version"]
    with Registry(suite.registry.address) as registry:
        held = registry.get_version("digits", version)
        by_format = {a.format: a.sha256 for a in held.artifacts}
        for fmt, expected in (("onnx", rpb.MODEL_FORMAT_ONNX), ("safetensors", rpb.MODEL_FORMAT_SAFETENSORS)):
            info = registry.download("digits", version, tmp_path / fmt, format=fmt)
            assert info.format == expected and info.sha256 == by_format[expected]
            assert hashlib.sha256((tmp_path / fmt).read_bytes()).hexdigest() == by_format[expected]
        primary = registry.download("digits", version, tmp_path / "primary")
        assert primary.format == rpb.MODEL_FORMAT_SAFETENSORS


def test_an_export_over_the_tolerance_leaves_the_version_ready_from_safetensors(suite: Suite, tmp_path: Path) -> None:
    """A trainer whose tolerance is 0: onnxruntime's float sums never match torch's exactly."""
    strict = start_service(
        "maas.trainer",
        {
            "MAAS_TRAINER_PORT": "0",
            "MAAS_TRAINER_METRICS_PORT": "0",
            "MAAS_TRAINER_DATA_DIR": str(tmp_path / "trainer"),
            "MAAS_TRAINER_REGISTRY_ADDRESS": suite.registry.address,
            "MAAS_TRAINER_DEFAULT_THREADS": "1",
            "MAAS_TRAINER_POLL_INTERVAL": "0.2",
            "MAAS_TRAINER_GRACE_SECONDS": "1",
            "MAAS_TRAINER_ONNX_TOLERANCE": "0",
        },
        tmp_path / "trainer.log",
    )
    try:
        result = suite.maas(
            "train",
            *("--model", "mlp", "--dataset", "digits", "--epochs", "1", "--seed", "2"),
            *("--register-as", "digits-strict", "--watch", "--json"),
            env={"MAAS_TRAINER_ADDRESS": strict.address},
        )
        assert result.rc == 0, result.stderr
    finally:
        strict.terminate()
        try:
            strict.wait(30)
        finally:
            strict.stop()
    version = result.json_lines()[-1]["version"]
    assert version["status"] == "VERSION_STATUS_READY"
    assert [a["format"] for a in version["artifacts"]] == ["MODEL_FORMAT_SAFETENSORS"]
    assert version["tags"]["onnx_export"].startswith("ONNX export refused")
    assert version["metrics"]["onnx_max_abs_diff"] > 0
    logs = " ".join(str(e) for e in result.json_lines()[:-1])
    assert "ONNX export refused" in logs
    served = suite.maas("versions", "download", f"digits-strict/{version['version']}", "-o", str(tmp_path / "w"))
    assert served.rc == 0, served.stderr
