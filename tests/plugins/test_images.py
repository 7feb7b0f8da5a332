"""Plugins go into the compose images the same way for the registry, the trainer and inference."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement

from tests.compose.support import MAAS_SERVICES, compose_config, environment

ROOT = Path(__file__).resolve().parents[2]


def test_one_build_argument_installs_the_same_plugins_into_every_image() -> None:
    services = compose_config({"MAAS_PLUGINS": "./examples/plugins", "MAAS_PLUGINS_ALLOW": "maas-example-plugin"})[
        "services"
    ]
    for name in MAAS_SERVICES:
        assert services[name]["build"]["args"]["MAAS_PLUGINS"] == "./examples/plugins"
        assert environment(services[name])["MAAS_PLUGINS_ALLOW"] == "maas-example-plugin"
        dockerfile = (ROOT / "services" / name / "Dockerfile").read_text()
        assert 'ARG MAAS_PLUGINS=""' in dockerfile
        assert re.search(r"pip install -c requirements/constraints.txt \$MAAS_PLUGINS", dockerfile)
    # Unset, nothing extra is installed and every installed distribution is allowed.
    plain = compose_config()["services"]
    assert all(plain[name]["build"]["args"]["MAAS_PLUGINS"] == "" for name in MAAS_SERVICES)


def test_the_example_plugin_keeps_the_registry_image_free_of_torch() -> None:
    # The registry's Dockerfile fails its build if a plugin pulls torch in; the example does not.
    requires = importlib.metadata.distribution("maas-example-plugin").requires or []
    names = {Requirement(r).name for r in requires if Requirement(r).marker is None}
    assert names == {"maas-common", "numpy"}
    registry = (ROOT / "services" / "registry" / "Dockerfile").read_text()
    plugins_at = registry.index("$MAAS_PLUGINS")
    assert "find_spec('torch') is not None" in registry[plugins_at:]
