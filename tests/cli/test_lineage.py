"""Lineage and the model card through the real suite: `maas versions show REF [--json]`.

The session's digits MLP (trained by `maas train`) records the job, its run, the data set
with its fingerprint and split, and the worker's software versions; a pushed ONNX file and a
log_model version record where they came from on the caller's side; a version registered
without lineage prints its card without that section.
"""

from __future__ import annotations

import hashlib
import platform
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from maas.client import Endpoints, Registry, log_model
from maas.v1 import registry_pb2 as rpb
from tests.cli.conftest import Suite

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


@pytest.fixture
def registry(suite: Suite) -> Iterator[Registry]:
    with Registry(Endpoints(registry=suite.registry.address, timeout=30).channel("registry")) as client:
        yield client


def tiny_onnx(path: Path) -> Path:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, 4),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def test_a_trained_version_records_its_job_data_and_software(
    suite: Suite, trained: dict[str, Any], tmp_path: Path
) -> None:
    job_id = trained["result"]["job"]["job_id"]
    ref = f"digits/{trained['result']['version']['version']}"
    job = suite.maas("jobs", "show", job_id, "--json").json()
    shown = suite.maas("versions", "show", ref, "--json")
    assert shown.rc == 0, shown.stderr
    doc = shown.json()
    lineage = doc["lineage"]
    assert (lineage["source"], lineage["job_id"], doc["run_id"]) == ("trainer", job_id, job["run_id"])
    assert doc["run_id"]
    assert "parent" not in lineage and lineage["method"] == ""
    # Exactly the resolved job spec's data set and split: what an optimization rebuilds.
    spec = job["spec"]
    assert lineage["dataset"] == {
        "name": "digits",
        "args": {},
        "path": "",
        "fingerprint": f"scikit-learn=={metadata.version('scikit-learn')}:digits",
        "validation_split": pytest.approx(spec["validation_split"]),
        "seed": 1,
        "origin": "built-in",
    }
    assert lineage["architecture_origin"] == "built-in"
    assert spec["seed"] == 1
    assert lineage["software"] == {
        "maas": metadata.version("maas-trainer"),
        "python": platform.python_version(),
        **{dist: metadata.version(dist) for dist in ("torch", "torchvision", "onnx", "onnxruntime")},
    }
    # Each artifact's digest is the sha256 of what a download brings.
    formats = [a["format"] for a in doc["artifacts"]]
    assert formats == ["MODEL_FORMAT_SAFETENSORS", "MODEL_FORMAT_ONNX"]
    for artifact, fmt in zip(doc["artifacts"], ("safetensors", "onnx"), strict=True):
        dest = tmp_path / f"model.{fmt}"
        got = suite.maas("versions", "download", ref, "--format", fmt, "-o", str(dest), "--json")
        assert got.rc == 0, got.stderr
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == artifact["sha256"]
        assert dest.stat().st_size == artifact["size_bytes"]

    card = suite.maas("versions", "show", ref)
    assert card.rc == 0, card.stderr
    text = card.stdout
    sections = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert sections[0].startswith(f"{ref}  READY  safetensors")
    assert [s for s in sections[1:] if " " not in s] == [
        "Signature",
        "Architecture",
        "Metrics",
        "Lineage",
        "Artifacts",
        "Tags",
    ]
    for expected in (
        f"job          {job_id}",
        f"run          {doc['run_id']}",
        "dataset      digits",
        "arch origin  built-in",
        "data origin  built-in",
        f"fingerprint  {lineage['dataset']['fingerprint']}",
        f"seed {spec['seed']}",
        f"torch {metadata.version('torch')}",
        "input   input   FP32  [-1, 1, 8, 8]",
        "labels         0, 1, 2, 3, 4, 5, 6, 7, 8, 9",
        "normalization  mean [",
        f"sha256 {doc['artifacts'][1]['sha256']}",
    ):
        assert expected in text, (expected, text)


def test_a_pushed_onnx_file_says_it_was_pushed(suite: Suite, tmp_path: Path) -> None:
    pushed = suite.maas("push", "lineage-pushed", str(tiny_onnx(tmp_path / "tiny.onnx")), "--json")
    assert pushed.rc == 0, pushed.stderr
    ref = f"lineage-pushed/{pushed.json()['version']}"
    doc = suite.maas("versions", "show", ref, "--json").json()
    assert doc["lineage"]["source"] == "push"
    assert doc["lineage"]["software"] == {"maas": metadata.version("maas"), "python": platform.python_version()}
    assert "dataset" not in doc["lineage"] and doc["lineage"]["job_id"] == ""
    card = suite.maas("versions", "show", ref).stdout
    assert "Lineage" in card and "source    push" in card
    assert f"sha256 {hashlib.sha256((tmp_path / 'tiny.onnx').read_bytes()).hexdigest()}" in card


def test_log_model_records_the_libraries_that_exported_and_checked_it(registry: Registry) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    parent = log_model("lineage-logged", module, torch.randn(2, 4), registry=registry)
    assert parent.lineage.source == "log_model"
    assert dict(parent.lineage.software) == {
        "maas": metadata.version("maas"),
        "python": platform.python_version(),
        **{dist: metadata.version(dist) for dist in ("torch", "onnx", "onnxruntime")},
    }
    # A caller's own lineage adds to it: here a parent, which must exist.
    extra = rpb.Lineage(parent=rpb.VersionRef(model="lineage-logged", version=parent.version), method="fine-tune")
    child = log_model("lineage-logged", module, torch.randn(2, 4), registry=registry, lineage=extra)
    fetched = registry.get_version("lineage-logged", child.version)
    assert (fetched.lineage.source, fetched.lineage.method) == ("log_model", "fine-tune")
    assert (fetched.lineage.parent.model, fetched.lineage.parent.version) == ("lineage-logged", parent.version)
    assert fetched.lineage.software["torch"] == metadata.version("torch")


def test_a_version_without_lineage_prints_its_card_without_one(suite: Suite, registry: Registry) -> None:
    registry.create_model("lineage-none")
    version = registry.create_version("lineage-none", format=rpb.MODEL_FORMAT_ONNX, description="no lineage")
    card = suite.maas("versions", "show", f"lineage-none/{version.version}")
    assert card.rc == 0, card.stderr
    assert "Lineage" not in card.stdout and "PENDING" in card.stdout and "no lineage" in card.stdout
    assert "lineage" not in suite.maas("versions", "show", f"lineage-none/{version.version}", "--json").json()
