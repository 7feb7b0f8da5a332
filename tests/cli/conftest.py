"""A real suite (registry, trainer, inference as their own processes) shared by the CLI tests.

The trained model comes from the CLI itself: `maas train ... --watch --json`
runs once per session and the tests that need a registered, promoted model
use its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import Result, maas
from tests.processes import ServiceProcess, start_suite, stop_all

EPOCHS = 3


@dataclass
class Suite:
    registry: ServiceProcess
    trainer: ServiceProcess
    inference: ServiceProcess
    workdir: Path
    trained: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "MAAS_REGISTRY_ADDRESS": self.registry.address,
            "MAAS_TRAINER_ADDRESS": self.trainer.address,
            "MAAS_INFERENCE_ADDRESS": self.inference.address,
            "MAAS_TIMEOUT": "30",
        }

    def maas(self, *args: str, **kwargs: Any) -> Result:
        return maas(*args, env={**self.env, **kwargs.pop("env", {})}, cwd=self.workdir, **kwargs)


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    work = tmp_path_factory.mktemp("cli-suite")
    started = start_suite(work)
    suite = Suite(started["registry"], started["trainer"], started["inference"], work)
    try:
        yield suite
    finally:
        stop_all([suite.inference, suite.trainer, suite.registry])


@pytest.fixture(scope="session")
def trained(suite: Suite) -> dict[str, Any]:
    """`maas train --watch --json` of digits with an MLP, registered as 'digits' and promoted."""
    if not suite.trained:
        result = suite.maas(
            "train",
            "--model",
            "mlp",
            "--dataset",
            "digits",
            "--epochs",
            str(EPOCHS),
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--seed",
            "1",
            "--register-as",
            "digits",
            "--promote",
            "production",
            "--promote-threshold",
            "0.5",
            "--watch",
            "--json",
        )
        assert result.rc == 0, result.stderr
        lines = result.json_lines()
        suite.trained = {"events": lines[:-1], "result": lines[-1], "stderr": result.stderr}
    return suite.trained
