"""Entry-point discovery: what is found, what is skipped and why, and the operator's allow list."""

from __future__ import annotations

import importlib
import logging
import sys
import uuid
from pathlib import Path

import pytest

from maas.common import plugins
from tests.plugins.support import write_distribution

GOOD = """
    from pydantic import Field
    from maas.common.plugins import ArchitectureArgs, ArchitecturePlugin, DatasetArgs, DatasetPlugin, DatasetShape

    class WideArgs(ArchitectureArgs):
        width: int = Field(16, ge=1, le=512, description="hidden units")

    class Wide(ArchitecturePlugin[WideArgs]):
        name = "{name}"
        description = "one hidden layer"
        Args = WideArgs

        def build(self, args, num_classes, input_shape):
            from torch import nn
            return nn.Sequential(nn.Flatten(), nn.Linear(4, args.width), nn.ReLU(), nn.Linear(args.width, num_classes))

    class Rows(DatasetPlugin[DatasetArgs]):
        name = "{name}_rows"
        Args = DatasetArgs

        def describe(self, args, source):
            return DatasetShape((4,), ("a", "b"))

        def load(self, args, shape, source, options):
            raise NotImplementedError
"""


@pytest.fixture
def unique() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def mine(catalog: plugins.Catalog, kind: plugins.Kind, prefix: str) -> dict[str, plugins.Entry]:
    return {e.name: e for e in catalog.entries(kind) if e.name.startswith(prefix)}


def test_an_installed_distribution_contributes_its_entries_with_their_origin(site: Path, unique: str) -> None:
    write_distribution(
        site,
        "acme-nets",
        "2.3.1",
        modules={f"{unique}_mod": GOOD.format(name=unique)},
        architectures={unique: f"{unique}_mod:Wide"},
        datasets={f"{unique}_rows": f"{unique}_mod:Rows"},
    )
    catalog = plugins.Catalog()
    entry = catalog.get("architecture", unique)
    assert entry is not None and entry.available
    assert entry.origin == plugins.Origin("acme-nets", "2.3.1", builtin=False)
    assert entry.origin.label == "acme-nets 2.3.1"
    assert isinstance(entry.plugin, plugins.ArchitecturePlugin)
    rows = catalog.get("dataset", f"{unique}_rows")
    assert rows is not None and rows.origin.distribution == "acme-nets"
    assert unique in catalog.names("architecture")


def test_broken_entries_are_skipped_with_their_reason_and_the_rest_still_loads(
    site: Path, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_distribution(
        site,
        "acme-broken",
        modules={
            f"{unique}_good": GOOD.format(name=f"{unique}_ok"),
            f"{unique}_bad": "raise ZeroDivisionError('plugin import blew up')\n",
            f"{unique}_odd": f"""
                from maas.common.plugins import ArchitectureArgs, ArchitecturePlugin
                NOT_A_PLUGIN = object()

                class Misnamed(ArchitecturePlugin[ArchitectureArgs]):
                    name = "{unique}_other"
                    Args = ArchitectureArgs
                    def build(self, args, num_classes, input_shape): ...

                class BadArgs(ArchitecturePlugin[ArchitectureArgs]):
                    name = "{unique}_args"
                    Args = dict
                    def build(self, args, num_classes, input_shape): ...

                class Abstract(ArchitecturePlugin[ArchitectureArgs]):
                    name = "{unique}_abstract"
                    Args = ArchitectureArgs
            """,
        },
        architectures={
            f"{unique}_ok": f"{unique}_good:Wide",
            f"{unique}_import": f"{unique}_bad:Anything",
            f"{unique}_missing": f"{unique}_nowhere:Thing",
            f"{unique}_object": f"{unique}_odd:NOT_A_PLUGIN",
            f"{unique}_name": f"{unique}_odd:Misnamed",
            f"{unique}_args": f"{unique}_odd:BadArgs",
            f"{unique}_abstract": f"{unique}_odd:Abstract",
        },
    )
    with caplog.at_level(logging.WARNING, logger="maas.plugins"):
        entries = mine(plugins.Catalog(), "architecture", unique)
    assert entries[f"{unique}_ok"].available
    reasons = {name[len(unique) + 1 :]: e.reason for name, e in entries.items() if not e.available}
    assert "ZeroDivisionError: plugin import blew up" in reasons["import"]
    assert "ModuleNotFoundError" in reasons["missing"]
    assert "is not a maas ArchitecturePlugin" in reasons["object"]
    assert f"declares the name '{unique}_other'" in reasons["name"]
    assert "Args must be a subclass of maas.common.plugins.ArchitectureArgs" in reasons["args"]
    assert "TypeError" in reasons["abstract"]  # build() not implemented: the class cannot be created
    assert all(entries[f"{unique}_{key}"].plugin is None for key in reasons)
    logged = caplog.text
    assert f"{unique}_import" in logged and "plugin import blew up" in logged


def test_of_two_entries_with_one_name_the_later_distribution_is_refused(site: Path, unique: str) -> None:
    for dist in ("aaa-first", "zzz-second"):
        write_distribution(
            site / dist,
            dist,
            modules={f"{unique}_{dist[:3]}": GOOD.format(name=unique)},
            architectures={unique: f"{unique}_{dist[:3]}:Wide"},
        )
        sys.path.insert(0, str(site / dist))
    try:
        entries = [e for e in plugins.Catalog().entries("architecture") if e.name == unique]
    finally:
        sys.path[:] = [p for p in sys.path if not p.startswith(str(site))]
    assert [(e.origin.distribution, e.available) for e in entries] == [("aaa-first", True), ("zzz-second", False)]
    assert entries[1].reason == f"the name '{unique}' is taken by aaa-first 1.0"
    assert f"{unique}_zzz" not in sys.modules  # a refused entry is never imported


def test_the_allow_list_keeps_other_distributions_out_without_importing_them(site: Path, unique: str) -> None:
    write_distribution(
        site,
        "Acme_Allowed",
        modules={f"{unique}_yes": GOOD.format(name=f"{unique}_yes")},
        architectures={f"{unique}_yes": f"{unique}_yes:Wide"},
    )
    write_distribution(
        site,
        "acme-denied",
        modules={f"{unique}_no": GOOD.format(name=f"{unique}_no")},
        architectures={f"{unique}_no": f"{unique}_no:Wide"},
    )
    settings = plugins.PluginSettings(allow="acme-allowed, other")  # names compare as pip compares them
    entries = mine(plugins.Catalog(settings.allowed()), "architecture", unique)
    assert entries[f"{unique}_yes"].available
    assert not entries[f"{unique}_no"].available
    assert entries[f"{unique}_no"].reason == "acme-denied is not in MAAS_PLUGINS_ALLOW"
    assert f"{unique}_no" not in sys.modules
    assert plugins.PluginSettings(allow="").allowed() is None  # empty: every installed distribution


def test_a_plugin_that_hangs_at_import_is_given_up_on(site: Path, unique: str) -> None:
    write_distribution(
        site,
        "acme-slow",
        modules={f"{unique}_slow": "import time\ntime.sleep(30)\n"},
        architectures={f"{unique}_slow": f"{unique}_slow:Thing"},
    )
    entries = mine(plugins.Catalog(timeout=0.5), "architecture", unique)
    assert "did not finish within 0.5 s" in entries[f"{unique}_slow"].reason


def test_the_process_catalog_reads_the_operator_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_PLUGINS_ALLOW", "acme-one,acme-two")
    monkeypatch.setenv("MAAS_PLUGINS_TIMEOUT_SECONDS", "7")
    plugins.reset()
    try:
        catalog = plugins.installed()
        assert catalog.allow == {"acme-one", "acme-two"}
        assert plugins.timeout() == 7
        assert plugins.installed() is catalog
    finally:
        plugins.reset()


def test_the_built_in_catalog_comes_through_the_same_entry_points() -> None:
    catalog = plugins.Catalog()
    architectures = {e.name: e for e in catalog.entries("architecture") if e.origin.builtin}
    datasets = {e.name: e for e in catalog.entries("dataset") if e.origin.builtin}
    assert {"lenet", "mlp", "resnet18", "mobilenet_v3_small", "squeezenet1_1"} <= set(architectures)
    assert set(datasets) >= {"digits", "cifar10", "mnist", "fashion_mnist", "imagefolder", "fake"}
    assert {e.origin.distribution for e in architectures.values()} == {"maas-common"}
    assert {e.origin.distribution for e in datasets.values()} == {"maas-trainer"}
    assert all(e.available and e.origin.label == "built-in" for e in [*architectures.values(), *datasets.values()])
    assert architectures["mlp"].target == "maas.common.builtin_architectures:MLP"


def test_a_plugin_cannot_take_a_built_in_name(site: Path, unique: str) -> None:
    write_distribution(
        site,
        "acme-shadow",
        modules={f"{unique}_shadow": GOOD.format(name="mlp")},
        architectures={"mlp": f"{unique}_shadow:Wide"},
    )
    entries = [e for e in plugins.Catalog(allow=["acme-shadow"]).entries("architecture") if e.name == "mlp"]
    assert [(e.origin.label, e.available) for e in entries] == [("built-in", True), ("acme-shadow 1.0", False)]
    assert entries[1].reason == "the name 'mlp' is taken by built-in"
    assert f"{unique}_shadow" not in sys.modules
