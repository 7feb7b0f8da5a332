"""`maas models create|edit|rm` and `maas versions archive|unarchive|rm`, the real CLI against a real registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import BlockingRegistryClient
from maas.v1 import registry_pb2 as pb
from tests.cli.support import Result, assert_one_line_error, maas
from tests.helpers import MLP_ARCH, safetensors_bytes, signature
from tests.processes import ServiceProcess, start_service


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("cli-lifecycle")
    proc = start_service(
        "maas.registry",
        {
            "MAAS_REGISTRY_PORT": "0",
            "MAAS_REGISTRY_METRICS_PORT": "0",
            "MAAS_REGISTRY_DATA_DIR": str(work),
            "MAAS_REGISTRY_GRACE_SECONDS": "1",
        },
        work / "registry.log",
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        finally:
            proc.stop()


@pytest.fixture(scope="module")
def client(registry: ServiceProcess) -> Iterator[BlockingRegistryClient]:
    c = BlockingRegistryClient(ChannelConfig(registry.address, timeout=30))
    yield c
    c.close()


def run(registry: ServiceProcess, *args: str) -> Result:
    return maas(*args, env={"MAAS_REGISTRY_ADDRESS": registry.address, "MAAS_TIMEOUT": "30"}, timeout=60)


def ready(client: BlockingRegistryClient, model: str, tmp_path: Path) -> int:
    client.ensure_model(model)
    version = client.create_version(
        model, format=pb.MODEL_FORMAT_SAFETENSORS, architecture=MLP_ARCH, signature=signature()
    )
    path = tmp_path / f"{model}-{version.version}.safetensors"
    path.write_bytes(safetensors_bytes(version.version))
    assert client.upload_artifact(model, version.version, path).status == pb.VERSION_STATUS_READY
    return int(version.version)


def test_models_create_edit_and_rm(registry: ServiceProcess, client: BlockingRegistryClient, tmp_path: Path) -> None:
    created = run(registry, "models", "create", "lc-model", "--description", "first", "--tag", "team=vision", "--json")
    assert created.rc == 0, created.stderr
    assert (created.json()["name"], created.json()["tags"]) == ("lc-model", {"team": "vision"})
    again = run(registry, "models", "create", "lc-model")
    assert_one_line_error(again)
    assert again.rc == 1

    edited = run(
        registry, "models", "edit", "lc-model", "--description", "second", "--tag", "stage=dev=1", "--untag", "team"
    )
    assert edited.rc == 0, edited.stderr
    shown = client.get_model("lc-model")
    assert (shown.description, dict(shown.tags)) == ("second", {"stage": "dev=1"})
    assert run(registry, "models", "edit", "nope", "--description", "x").rc == 1

    one = ready(client, "lc-model", tmp_path)
    ready(client, "lc-model", tmp_path)
    client.create_version("lc-model", format=pb.MODEL_FORMAT_SAFETENSORS, architecture=MLP_ARCH, signature=signature())
    client.set_alias("lc-model", "production", one)
    # READY versions and an alias: refused, saying what a forced delete removes.
    refused = run(registry, "models", "rm", "lc-model")
    assert_one_line_error(refused)
    assert refused.rc == 1
    assert "3 versions (2 READY)" in refused.stderr and f"production->{one}" in refused.stderr
    assert client.get_model("lc-model").latest_version == 3

    forced = run(registry, "models", "rm", "lc-model", "--force", "--json")
    assert forced.rc == 0, forced.stderr
    assert forced.json() == {
        "model": "lc-model",
        "deleted": True,
        "versions": [1, 2, 3],
        "ready_versions": [1, 2],
        "aliases": {"production": one},
    }
    assert run(registry, "models", "show", "lc-model").rc == 1
    # A model with nothing READY goes without --force.
    assert run(registry, "models", "create", "lc-empty").rc == 0
    gone = run(registry, "models", "rm", "lc-empty")
    assert gone.rc == 0, gone.stderr
    assert "lc-empty" in gone.stdout


def test_versions_archive_unarchive_and_rm(
    registry: ServiceProcess, client: BlockingRegistryClient, tmp_path: Path
) -> None:
    first, second = ready(client, "lc-versions", tmp_path), ready(client, "lc-versions", tmp_path)
    client.set_alias("lc-versions", "production", first)

    held = run(registry, "versions", "archive", f"lc-versions/{first}")
    assert_one_line_error(held)
    assert held.rc == 1
    archived = run(registry, "versions", "archive", f"lc-versions/{second}", "--json")
    assert archived.rc == 0, archived.stderr
    assert archived.json()["archived"] is True
    listed = run(registry, "versions", "ls", "lc-versions", "--json").json()
    assert [v["version"] for v in listed] == [first]
    restored = run(registry, "versions", "unarchive", "lc-versions", str(second), "--json")
    assert restored.rc == 0, restored.stderr
    assert restored.json().get("archived", False) is False
    assert client.get_version("lc-versions", second).archived is False

    # Deleting follows DeleteVersion: a version an alias points at needs --force, which removes the alias.
    refused = run(registry, "versions", "rm", "lc-versions@production")
    assert_one_line_error(refused)
    assert client.get_version("lc-versions", first).status == pb.VERSION_STATUS_READY
    bare = run(registry, "versions", "rm", "lc-versions")
    assert_one_line_error(bare)
    forced = run(registry, "versions", "rm", "lc-versions@production", "--force", "--json")
    assert forced.rc == 0, forced.stderr
    assert forced.json() == {"model": "lc-versions", "version": first, "deleted": True, "aliases": ["production"]}
    assert run(registry, "versions", "show", f"lc-versions/{first}").rc == 1
    assert "production" not in client.get_model("lc-versions").aliases
    plain = run(registry, "versions", "rm", "lc-versions", str(second))
    assert plain.rc == 0, plain.stderr
    assert f"lc-versions/{second}" in plain.stdout
    assert run(registry, "versions", "rm", f"lc-versions/{second}").rc == 1
