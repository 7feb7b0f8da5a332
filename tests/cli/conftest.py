"""A real suite (registry, trainer, inference as their own processes) shared by the CLI tests.

The trained model comes from the CLI itself: `maas train ... --watch --json`
runs once per session and the tests that need a registered, promoted model
use its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import Result, maas
from tests.processes import ServiceProcess, start_service

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
    registry = start_service(
        "maas.registry",
        {
            "MAAS_REGISTRY_PORT": "0",
            "MAAS_REGISTRY_METRICS_PORT": "0",
            "MAAS_REGISTRY_DATA_DIR": str(work / "registry"),
            "MAAS_REGISTRY_EVENT_POLL_INTERVAL": "0.05",
            "MAAS_REGISTRY_GRACE_SECONDS": "1",
        },
        work / "registry.log",
    )
    trainer_env = {
        "MAAS_TRAINER_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_TRAINER_DATA_DIR": str(work / "trainer"),
        "MAAS_TRAINER_REGISTRY_ADDRESS": registry.address,
        "MAAS_TRAINER_DEFAULT_THREADS": "1",
        "MAAS_TRAINER_POLL_INTERVAL": "0.2",
        "MAAS_TRAINER_METRICS_SYNC_INTERVAL": "0.5",
        "MAAS_TRAINER_CANCEL_GRACE_SECONDS": "3",
        "MAAS_TRAINER_GRACE_SECONDS": "1",
    }
    inference_env = {
        "MAAS_INFERENCE_PORT": "0",
        "MAAS_INFERENCE_METRICS_PORT": "0",
        "MAAS_INFERENCE_REGISTRY_ADDRESS": registry.address,
        "MAAS_INFERENCE_CACHE_DIR": str(work / "inference-cache"),
        "MAAS_INFERENCE_GRACE_SECONDS": "1",
        "MAAS_INFERENCE_RECONNECT_INITIAL_SECONDS": "0.2",
        "MAAS_INFERENCE_RECONNECT_MAX_SECONDS": "1",
    }
    with ThreadPoolExecutor(2) as pool:
        trainer_f = pool.submit(start_service, "maas.trainer", trainer_env, work / "trainer.log")
        inference_f = pool.submit(start_service, "maas.inference", inference_env, work / "inference.log")
        started = [f.result() for f in (trainer_f, inference_f)]
    suite = Suite(registry, started[0], started[1], work)
    try:
        yield suite
    finally:
        for proc in (suite.inference, suite.trainer, suite.registry):
            proc.terminate()
        for proc in (suite.inference, suite.trainer, suite.registry):
            try:
                proc.wait(30)
            finally:
                proc.stop()


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
