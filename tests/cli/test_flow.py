"""train -> promote -> serve -> predict -> metrics, each step a real `maas` invocation against a real suite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from maas.v1 import registry_pb2 as rpb
from maas.v1 import registry_pb2_grpc
from tests.cli.conftest import EPOCHS, Suite
from tests.helpers import version_request

pytestmark = pytest.mark.slow


def test_train_watch_reports_every_event_once_and_ends_ready(trained: dict[str, Any]) -> None:
    events, result = trained["events"], trained["result"]
    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "each event exactly once, in order"
    epochs = [e["epoch"] for e in events if "epoch" in e]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    assert all("val_accuracy" in e["metrics"] and "train_loss" in e["metrics"] for e in epochs)
    steps = [e["step"] for e in events if "step" in e]
    assert steps and all(s["steps_per_epoch"] > 0 for s in steps)
    assert events[-1]["state"]["state"] == "JOB_STATE_SUCCEEDED"
    assert result["ok"] is True
    assert result["version"]["status"] == "VERSION_STATUS_READY"
    assert result["job"]["promoted_alias"] == "production"
    assert result["version"]["model"] == "digits"
    assert "production" in result["version"]["aliases"]


def test_watch_of_a_finished_job_replays_it_in_text(suite: Suite, trained: dict[str, Any]) -> None:
    job_id = trained["result"]["job"]["job_id"]
    version = trained["result"]["version"]["version"]
    watched = suite.maas("jobs", "watch", job_id)
    assert watched.rc == 0, watched.stderr
    assert f"digits/{version}" in watched.stdout
    assert sum(1 for line in watched.stdout.splitlines() if line.startswith("epoch ")) == EPOCHS


def test_jobs_commands(suite: Suite, trained: dict[str, Any]) -> None:
    job_id = trained["result"]["job"]["job_id"]
    listed = suite.maas("jobs", "ls", "--json")
    assert listed.rc == 0, listed.stderr
    assert job_id in [j["job_id"] for j in listed.json()]
    succeeded = suite.maas("jobs", "ls", "--state", "succeeded", "--json").json()
    assert job_id in [j["job_id"] for j in succeeded]
    assert all(j["state"] == "JOB_STATE_SUCCEEDED" for j in succeeded)
    assert job_id not in [j["job_id"] for j in suite.maas("jobs", "ls", "--state", "failed", "--json").json()]

    shown = suite.maas("jobs", "show", job_id, "--json").json()
    assert shown["state"] == "JOB_STATE_SUCCEEDED"
    assert shown["registered_version"] == trained["result"]["version"]["version"]
    assert shown["spec"]["epochs"] == EPOCHS

    logs = suite.maas("jobs", "logs", job_id, "--json")
    assert logs.rc == 0, logs.stderr
    kinds = {next(k for k in ("log", "state") if k in e) for e in logs.json_lines()}
    assert kinds == {"log", "state"}
    text = suite.maas("jobs", "logs", job_id)
    assert text.rc == 0 and "SUCCEEDED" in text.stdout


def test_models_versions_and_aliases(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    version = trained["result"]["version"]["version"]
    models = suite.maas("models", "ls", "--json").json()
    digits = next(m for m in models if m["name"] == "digits")
    assert digits["aliases"]["production"] == version

    shown = suite.maas("models", "show", "digits", "--json").json()
    assert shown["model"]["name"] == "digits"
    assert version in [v["version"] for v in shown["versions"]]

    listed = suite.maas("versions", "ls", "digits", "--status", "ready", "--order-by", "val_accuracy", "--json")
    assert listed.rc == 0, listed.stderr
    accuracies = [v["metrics"]["val_accuracy"] for v in listed.json()]
    assert accuracies == sorted(accuracies, reverse=True)

    by_alias = suite.maas("versions", "show", "digits@production", "--json").json()
    by_number = suite.maas("versions", "show", "digits", str(version), "--json").json()
    assert by_alias["version"] == by_number["version"] == version
    assert by_alias["architecture"]["labels"] == [str(i) for i in range(10)]
    assert by_alias["signature"]["inputs"][0]["shape"] == [-1, 1, 8, 8]

    moved = suite.maas("alias", "set", "digits", "staging", str(version), "--json")
    assert moved.rc == 0, moved.stderr
    assert suite.maas("versions", "show", "digits@staging", "--json").json()["version"] == version
    assert suite.maas("alias", "rm", "digits", "staging").rc == 0
    assert suite.maas("versions", "show", "digits@staging").rc != 0

    out = tmp_path / "model.safetensors"
    downloaded = suite.maas("versions", "download", "digits@production", "-o", str(out), "--architecture", "--json")
    assert downloaded.rc == 0, downloaded.stderr
    info = downloaded.json()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == info["sha256"] == by_alias["sha256"]
    assert json.loads(out.with_suffix(".json").read_text())["name"] == "mlp"


def test_versions_ls_orders_best_first_by_the_kind_of_metric(suite: Suite) -> None:
    """A loss sorts lowest first, an accuracy highest first; --asc/--desc override either."""
    with grpc.insecure_channel(suite.registry.address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        stub.CreateModel(rpb.CreateModelRequest(name="ordered"), timeout=30)
        for loss, accuracy in ((0.5, 0.8), (0.1, 0.95), (0.9, 0.6)):
            metrics = {"val_loss": loss, "val_accuracy": accuracy, "val_mse": loss}
            stub.CreateVersion(version_request("ordered", metrics=metrics), timeout=30)

    def order(*flags: str) -> list[int]:
        listed = suite.maas("versions", "ls", "ordered", *flags, "--json")
        assert listed.rc == 0, listed.stderr
        return [int(v["version"]) for v in listed.json()]

    assert order("--order-by", "val_loss") == [2, 1, 3]
    assert order("--order-by", "val_mse") == [2, 1, 3]
    assert order("--order-by", "val_accuracy") == [2, 1, 3]
    assert order("--order-by", "val_loss", "--desc") == [3, 1, 2]
    assert order("--order-by", "val_accuracy", "--asc") == [3, 1, 2]
    assert suite.maas("versions", "ls", "ordered", "--order-by", "val_loss", "--asc", "--desc").rc == 2


def test_serve_and_predict(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    version = trained["result"]["version"]["version"]
    loaded = suite.maas("serving", "load", "digits", "--json")
    assert loaded.rc == 0, loaded.stderr
    assert loaded.json()["version"] == str(version)
    served = suite.maas("serving", "ls", "--json").json()
    assert {"model": "digits", "version": str(version), "state": "READY"}.items() <= next(
        m for m in served if m["model"] == "digits"
    ).items()

    digits = load_digits()
    x = digits.data[:60].reshape(-1, 1, 8, 8).astype(np.float32)
    np.save(tmp_path / "batch.npy", x)
    result = suite.maas("predict", "digits@production", "--input", str(tmp_path / "batch.npy"), "-k", "3", "--json")
    assert result.rc == 0, result.stderr
    answer = result.json()
    assert answer["version"] == str(version)
    logits = np.asarray(answer["outputs"]["logits"]["data"])
    assert logits.shape == (60, 10)
    top1 = [row[0] for row in answer["predictions"]]
    assert [int(p["label"]) for p in top1] == logits.argmax(axis=1).tolist()
    assert all(len(row) == 3 and row[0]["probability"] >= row[1]["probability"] for row in answer["predictions"])
    accuracy = float(np.mean(logits.argmax(axis=1) == digits.target[:60]))
    assert accuracy >= 0.8, accuracy

    raw = suite.maas("predict", f"digits/{version}", "-i", str(tmp_path / "batch.npy"), "--raw", "--json").json()
    assert raw["predictions"] is None
    assert np.array_equal(np.asarray(raw["outputs"]["logits"]["data"]), logits)

    # One sample as JSON (no batch dimension) and as an image file: the same answer as in the batch.
    (tmp_path / "one.json").write_text(json.dumps(x[7].tolist()))
    one = suite.maas("predict", "digits", "-i", str(tmp_path / "one.json"), "--json").json()
    assert np.allclose(np.asarray(one["outputs"]["logits"]["data"]), logits[7:8], atol=1e-5)
    Image.fromarray((digits.images[7] * 255 / 16).round().astype(np.uint8)).save(tmp_path / "seven.png")
    image = suite.maas("predict", "digits", "-i", str(tmp_path / "seven.png"), "--json").json()
    assert image["predictions"][0][0]["label"] == str(int(logits[7].argmax()))

    human = suite.maas("predict", "digits", "-i", str(tmp_path / "batch.npy"), "-k", "1")
    assert human.rc == 0 and len([ln for ln in human.stdout.splitlines() if ln.startswith("[")]) == 60


def test_metrics_chart_png_and_json(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    data = suite.maas("metrics", "digits", "production", "--json")
    assert data.rc == 0, data.stderr
    series = data.json()["metrics"]
    assert series["val_accuracy"]["steps"] == list(range(1, EPOCHS + 1))
    assert all(type(step) is int for s in series.values() for step in s["steps"]), "steps are integers"
    final = trained["result"]["version"]["metrics"]["val_accuracy"]
    assert series["val_accuracy"]["values"][-1] == pytest.approx(final)

    per_step = suite.maas("metrics", "digits", "production", "--key", "loss", "--json").json()["metrics"]["loss"]
    assert len(per_step["steps"]) > EPOCHS and per_step["steps"] == sorted(per_step["steps"])

    chart = suite.maas("metrics", "digits", "production", "--key", "val_loss", "--height", "8")
    assert chart.rc == 0, chart.stderr
    assert len(chart.stdout.splitlines()) == 1 + 8 + 2  # title, rows, axis and step labels

    png = tmp_path / "metrics.png"
    assert suite.maas("metrics", "digits", "production", "--png", str(png)).rc == 0
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100
