"""Fixtures of the multi-process inference tests: a real registry per module.

Nothing here (or in any in-process inference test) may import maas.oip: the
tests drive the server with tritonclient, whose generated modules register the
same proto symbols.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference")


@pytest.fixture(scope="module")
def registry_process(workdir: Path) -> Iterator[support.Process]:
    proc = support.start_registry(workdir / "registry")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def registry(registry_process: support.Process) -> Iterator[BlockingRegistryClient]:
    client = support.registry_client(registry_process.address)
    yield client
    client.close()


# A registry process on a migrated, empty database of each backend (SQLite, PostgreSQL), per test.
@pytest.fixture
def db_registry_process(db_url: str, tmp_path: Path) -> Iterator[support.Process]:
    env = {
        "MAAS_REGISTRY_PORT": "0",
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_REGISTRY_DATABASE_URL": db_url,
        "MAAS_REGISTRY_AUTO_MIGRATE": "false",
        "MAAS_REGISTRY_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MAAS_REGISTRY_EVENT_POLL_INTERVAL": "0.05",
        "MAAS_REGISTRY_GRACE_SECONDS": "1",
    }
    proc = support.start("maas.registry", env, tmp_path / "registry.log", ready="registry")
    yield proc
    proc.stop()


@pytest.fixture
def db_registry(db_registry_process: support.Process) -> Iterator[BlockingRegistryClient]:
    client = support.registry_client(db_registry_process.address)
    yield client
    client.close()
