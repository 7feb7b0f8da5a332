"""A plugin through the CLI and the real services: listed, trained, registered, served, called; faults contained.

The example plugin (examples/plugins, installed by `make`) gives conv1d and
waveforms. Test-only distributions written into a folder on the services'
PYTHONPATH add a network that raises when built, one that returns the wrong
shape, a data set whose load hangs, an entry that cannot be imported and one
that tries to take the built-in name 'mlp'. The inference service serves
safetensors, so it builds the plugin's network itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.cli.support import Result, assert_one_line_error, maas
from tests.plugins.support import write_distribution
from tests.processes import ServiceProcess, start_suite, stop_all

pytestmark = pytest.mark.slow

FAULTY = """
    import math
    import time
    from maas.common.plugins import (
        ArchitectureArgs, ArchitecturePlugin, DatasetArgs, DatasetPlugin, DatasetShape, TensorNeed,
    )

    class Raising(ArchitecturePlugin[ArchitectureArgs]):
        name = "raising"
        Args = ArchitectureArgs

        def build(self, args, num_classes, input_shape):
            raise RuntimeError("no such layer: Conv5d")

        def parameters(self, args, num_classes, input_shape):
            return {"weight": TensorNeed((num_classes, math.prod(input_shape)))}

    class WrongShape(ArchitecturePlugin[ArchitectureArgs]):
        name = "wrong_shape"
        Args = ArchitectureArgs

        def build(self, args, num_classes, input_shape):
            from torch import nn
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))

    class SlowLoad(DatasetPlugin[DatasetArgs]):
        name = "slow_load"
        Args = DatasetArgs

        def describe(self, args, source):
            return DatasetShape((1, 32), ("low", "high"))

        def load(self, args, shape, source, options):
            time.sleep(3600)
"""
SHADOW = """
    from maas.common.plugins import ArchitectureArgs, ArchitecturePlugin

    class Mlp(ArchitecturePlugin[ArchitectureArgs]):
        name = "mlp"
        Args = ArchitectureArgs

        def build(self, args, num_classes, input_shape):
            raise AssertionError("never loaded: the name is the built-in's")
"""
TIMEOUT = 10
EXAMPLE = "maas-example-plugin 0.1.0"


class PluginSuite:
    def __init__(self, work: Path, site: Path, services: dict[str, ServiceProcess]) -> None:
        self.work, self.site, self.services = work, site, services

    @property
    def env(self) -> dict[str, str]:
        return {
            "MAAS_REGISTRY_ADDRESS": self.services["registry"].address,
            "MAAS_TRAINER_ADDRESS": self.services["trainer"].address,
            "MAAS_INFERENCE_ADDRESS": self.services["inference"].address,
            "MAAS_TIMEOUT": "60",
            **plugin_env(self.site),
        }

    def maas(self, *args: str) -> Result:
        return maas(*args, env=self.env, cwd=self.work)

    def alive(self) -> bool:
        return all(p.proc.poll() is None for p in self.services.values())


def plugin_env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "MAAS_PLUGINS_TIMEOUT_SECONDS": str(TIMEOUT)}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginSuite]:
    work = tmp_path_factory.mktemp("plugin-suite")
    site = work / "site"
    write_distribution(
        site,
        "acme-faulty",
        "0.3",
        modules={"acme_faulty": FAULTY},
        architectures={
            "raising": "acme_faulty:Raising",
            "wrong_shape": "acme_faulty:WrongShape",
            "broken": "acme_gone:X",
        },
        datasets={"slow_load": "acme_faulty:SlowLoad"},
    )
    write_distribution(site, "acme-shadow", modules={"acme_shadow": SHADOW}, architectures={"mlp": "acme_shadow:Mlp"})
    services = start_suite(
        work,
        plugin_env(site),
        # The inference service serves safetensors, so it builds the plugin's network itself.
        inference={"MAAS_INFERENCE_PREFERRED_FORMAT": "safetensors"},
    )
    try:
        yield PluginSuite(work, site, services)
    finally:
        stop_all(list(services.values()))


def train(suite: PluginSuite, *args: str) -> tuple[Result, dict[str, Any]]:
    result = suite.maas("train", *args, "--watch", "--json")
    return result, result.json_lines()[-1]


def test_the_catalog_lists_the_plugins_entries_with_their_origin(suite: PluginSuite) -> None:
    listed = suite.maas("catalog", "ls", "--json")
    assert listed.rc == 0, listed.stderr
    entries = {(e["kind"], e["name"], e["origin"].get("distribution")): e for e in listed.json()}
    conv = entries[("architecture", "conv1d", "maas-example-plugin")]
    assert conv["available"] and conv["origin"]["version"] == "0.1.0" and not conv["origin"].get("builtin")
    assert entries[("dataset", "waveforms", "maas-example-plugin")]["available"]
    assert entries[("architecture", "mlp", "maas-common")]["origin"]["builtin"]
    shadow = entries[("architecture", "mlp", "acme-shadow")]
    assert not shadow.get("available") and shadow["unavailable_reason"] == "the name 'mlp' is taken by built-in"
    broken = entries[("architecture", "broken", "acme-faulty")]
    assert not broken.get("available") and "ModuleNotFoundError" in broken["unavailable_reason"]

    text = suite.maas("catalog", "ls").stdout
    assert any(line.split()[:3] == ["architecture", "conv1d", "maas-example-plugin"] for line in text.splitlines())
    assert "unavailable:" in text and "architecture broken (acme-faulty 0.3): " in text
    shown = suite.maas("catalog", "show", "conv1d")
    assert shown.rc == 0, shown.stderr
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in shown.stdout.splitlines() if ": " in line}
    assert lines["from"] == f"{EXAMPLE} (maas_example_plugin.conv1d:Conv1d)"
    assert "input FP32 [*, *] ([channels, length] signals)" in shown.stdout
    width = next(line for line in shown.stdout.splitlines() if line.startswith("width "))
    assert width.split()[:4] == ["width", "integer", "16", "[1,"], width
    missing = suite.maas("catalog", "show", "conv9d")
    assert_one_line_error(missing)
    assert "not found" in missing.stderr
    # The trainer read the catalog when it started, and logged why the broken entries are out.
    log = suite.services["trainer"].log()
    assert (
        "architecture 'broken' from acme-faulty 0.3 is unavailable: importing acme_gone:X failed: ModuleNotFoundError"
        in log
    )


def test_a_plugin_architecture_is_trained_registered_served_and_called(suite: PluginSuite) -> None:
    result, final = train(
        suite,
        *("--model", "conv1d", "--dataset", "waveforms", "--dataset-arg", "num_samples=800"),
        *("--epochs", "6", "--optimizer", "adam", "--lr", "0.003", "--batch-size", "50", "--seed", "2"),
        *("--register-as", "waves", "--promote", "production", "--promote-threshold", "0.8"),
    )
    assert result.rc == 0, result.stderr
    assert final["job"]["metrics"]["val_accuracy"] >= 0.8, final["job"]["metrics"]
    ref = f"waves/{final['version']['version']}"
    card = suite.maas("versions", "show", ref, "--json").json()
    assert card["lineage"]["architecture_origin"] == EXAMPLE
    assert card["lineage"]["dataset"]["origin"] == EXAMPLE
    assert card["lineage"]["dataset"]["fingerprint"].startswith("maas-example-plugin==0.1.0:waveforms:")
    assert re.search(rf"\n  arch origin +{EXAMPLE}\n", suite.maas("versions", "show", ref).stdout)

    loaded = suite.maas("serving", "load", "waves", "--json")
    assert loaded.rc == 0, loaded.stderr
    from maas_example_plugin.waveforms import WaveformsArgs, generate

    x, y = generate(WaveformsArgs(num_samples=200), seed=99)  # rows the job never saw
    np.save(suite.work / "waves.npy", x)
    answered = suite.maas("predict", "waves", "--input", str(suite.work / "waves.npy"), "--json")
    assert answered.rc == 0, answered.stderr
    doc = answered.json()
    logits = np.asarray(doc["outputs"]["logits"]["data"], dtype=np.float32)
    assert logits.shape == (200, 4)
    assert float((logits.argmax(1) == y).mean()) >= 0.8
    assert doc["predictions"][0][0]["label"] in {"sine", "square", "sawtooth", "pulse"}
    # The served answers are the registered weights run by the plugin's own module.
    weights = suite.work / "waves.safetensors"
    assert suite.maas("versions", "download", ref, "--format", "safetensors", "-o", str(weights)).rc == 0
    expected = local_logits(card["architecture"], weights, x)
    assert np.abs(logits - expected).max() < 1e-4


def local_logits(architecture: dict[str, Any], weights: Path, x: np.ndarray) -> np.ndarray:
    import torch
    from safetensors.torch import load_file

    from maas.common import catalog

    arch = catalog.parse(architecture)
    module = catalog.build(arch).eval()
    catalog.load_weights(module, arch, load_file(str(weights)))
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(
    ("model", "dataset", "reason"),
    [
        (
            "raising",
            "waveforms",
            "building architecture raising (acme-faulty 0.3) failed: RuntimeError: no such layer: Conv5d",
        ),
        ("mlp", "slow_load", f"loading data set slow_load (acme-faulty 0.3) did not finish within {TIMEOUT} s"),
        (
            "wrong_shape",
            "waveforms",
            "architecture wrong_shape (acme-faulty 0.3) returned shape [2, 5] for 2 rows of [1, 64]; it must return [2, 4]",
        ),
    ],
    ids=["raises", "hangs", "wrong-shape"],
)
def test_a_faulty_plugin_fails_its_job_with_the_reason_and_the_services_stay_up(
    suite: PluginSuite, model: str, dataset: str, reason: str
) -> None:
    result, final = train(suite, "--model", model, "--dataset", dataset, "--epochs", "1", "--max-retries", "0")
    assert result.rc == 1, result.stdout
    job = final["job"]
    assert job["state"] == "JOB_STATE_FAILED" and job["reason"].startswith(reason), job
    logs = suite.maas("jobs", "logs", job["job_id"])
    assert reason in logs.stdout, logs.stdout
    assert suite.alive()
    assert suite.maas("catalog", "ls", "--kind", "dataset").rc == 0


def test_a_version_whose_plugin_network_raises_fails_to_load_with_the_reason(suite: PluginSuite) -> None:
    weights = suite.work / "raising.safetensors"
    save_file({"weight": np.zeros((3, 8), np.float32)}, str(weights))
    pushed = suite.maas(
        *("push", "raiser", str(weights), "--architecture", "raising", "--arg", "num_classes=3", "--input-shape", "8"),
        "--json",
    )
    assert pushed.rc == 0, pushed.stderr  # the registry checks the declared table: no torch needed
    loaded = suite.maas("serving", "load", "raiser")
    assert_one_line_error(loaded)
    assert loaded.stderr.startswith("maas: failed precondition: "), loaded.stderr
    assert (
        "building architecture raising (acme-faulty 0.3) failed: RuntimeError: no such layer: Conv5d" in loaded.stderr
    )
    assert suite.alive()
    listed = suite.maas("serving", "ls", "--json")
    assert listed.rc == 0, listed.stderr
    assert json.dumps(listed.json())  # the service still answers
