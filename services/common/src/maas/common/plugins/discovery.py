"""Finding the installed catalog: entry points of the `maas.architectures` and `maas.datasets` groups.

The built-in entries (lenet, mlp, the torchvision networks; digits, cifar10,
...) are registered by maas's own distributions through the same entry
points; an operator adds entries by installing a distribution that declares
some. `MAAS_PLUGINS_ALLOW` (a comma-separated list of distribution names)
restricts which other distributions may contribute; maas's own are always
allowed.

An entry that cannot be imported, is not a plugin, or declares something
malformed is skipped with a logged reason, and `Catalog.entries()` lists it as
unavailable with that reason: the service stays up and the rest of the catalog
works. Built-in distributions are read first, then the others by name; of two
entries with one name the later is refused. Each process reads the catalog
once, on first use (`installed()`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from maas.common.plugins import arguments
from maas.common.plugins.bounded import reason, within
from maas.common.plugins.interface import (
    DATATYPES,
    NAME,
    ArchitectureArgs,
    ArchitecturePlugin,
    DatasetArgs,
    DatasetPlugin,
    TensorSpec,
)

log = logging.getLogger("maas.plugins")

Kind = Literal["architecture", "dataset"]
KINDS: tuple[Kind, ...] = ("architecture", "dataset")
GROUPS: dict[Kind, str] = {"architecture": "maas.architectures", "dataset": "maas.datasets"}
BUILTIN_DISTRIBUTIONS = frozenset({"maas", "maas-common", "maas-registry", "maas-trainer", "maas-inference"})
PATH_USES = ("none", "optional", "required")


class PluginSettings(BaseSettings):
    """Which installed plugins a service may use, and how long their code may take."""

    model_config = SettingsConfigDict(env_prefix="MAAS_PLUGINS_", extra="ignore")

    allow: str = Field(
        "",
        description="Distributions whose maas.architectures / maas.datasets entry points are used, comma-separated "
        "(e.g. maas-example-plugin); empty: every installed one. maas's own distributions are always used. "
        "Read by the trainer, its workers, the inference service and the registry.",
    )
    timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="Longest a plugin may take to import, to build a network or to load a data set; "
        "past it the job (or the model load) fails with that reason.",
    )

    def allowed(self) -> frozenset[str] | None:
        names = {canonical(n) for n in self.allow.split(",") if n.strip()}
        return frozenset(names) if names else None


def canonical(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution.strip()).lower()


@dataclass(frozen=True)
class Origin:
    """Where an entry comes from: a built-in distribution of maas, or the operator's plugin."""

    distribution: str
    version: str
    builtin: bool

    @property
    def label(self) -> str:
        """'built-in', or 'DISTRIBUTION VERSION': what lineage records and the CLI prints."""
        return "built-in" if self.builtin else f"{self.distribution} {self.version}".strip()


@dataclass(frozen=True)
class Entry:
    """One catalog entry; `plugin` is None when it is unavailable, and `reason` says why."""

    kind: Kind
    name: str
    origin: Origin
    plugin: Any = None
    reason: str = ""
    target: str = ""  # the entry point's "module:attribute"

    @property
    def available(self) -> bool:
        return self.plugin is not None


def _origin(ep: metadata.EntryPoint) -> Origin:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return Origin("unknown", "", False)
    name = str(dist.metadata["Name"] or dist.name)
    return Origin(name, str(dist.version), canonical(name) in BUILTIN_DISTRIBUTIONS)


def _problem(kind: Kind, entry_name: str, plugin: Any) -> str:
    """What is wrong with a loaded plugin's declaration ("" when nothing is)."""
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return "its name must be 1-64 of a-z 0-9 _, starting with a letter"
    if name != entry_name:
        return f"it declares the name '{name}' but its entry point is '{entry_name}'"
    if not isinstance(getattr(plugin, "description", ""), str):
        return "its description must be a string"
    base = ArchitectureArgs if kind == "architecture" else DatasetArgs
    args = getattr(plugin, "Args", None)
    if not isinstance(args, type) or not issubclass(args, base):
        return f"its Args must be a subclass of maas.common.plugins.{base.__name__}"
    try:
        arguments.describe(args)
    except Exception as exc:  # noqa: BLE001 - plugin code: whatever it raises makes the entry unavailable
        return f"its arguments have no JSON schema ({reason(exc)})"
    if kind == "dataset":
        if plugin.path not in PATH_USES:
            return f"its path must be one of {', '.join(PATH_USES)}"
        return ""
    inputs = plugin.inputs
    if not isinstance(inputs, tuple) or not inputs or not all(isinstance(i, TensorSpec) for i in inputs):
        return "its inputs must be a non-empty tuple of TensorSpec"
    for spec in inputs:
        if not spec.name.isidentifier() or spec.datatype not in DATATYPES:
            return f"input '{spec.name[:40]}' needs an identifier name and one of {', '.join(DATATYPES)}"
        if spec.shape is not None and not all(isinstance(d, int) and (d == -1 or d >= 1) for d in spec.shape):
            return f"input '{spec.name}' has a shape that is not -1 or positive dimensions"
    if not isinstance(plugin.normalize, bool):
        return "its normalize must be True or False"
    return ""


def _load(kind: Kind, ep: metadata.EntryPoint, timeout: float) -> tuple[Any, str]:
    """(plugin, "") or (None, why not)."""
    base: type[Any] = ArchitecturePlugin if kind == "architecture" else DatasetPlugin
    try:
        obj = within(timeout, f"importing {ep.value}", ep.load)
        if isinstance(obj, type) and issubclass(obj, base):
            obj = within(timeout, f"creating {ep.value}", obj)
    except Exception as exc:  # noqa: BLE001 - within() wraps plugin failures; anything else is as unusable
        return None, str(getattr(exc, "message", "")) or reason(exc)
    if not isinstance(obj, base):
        return None, f"{ep.value} is not a maas {base.__name__} (it is {type(obj).__name__})"
    problem = _problem(kind, ep.name, obj)
    return (None, problem) if problem else (obj, "")


def _read(kind: Kind, allow: frozenset[str] | None, timeout: float) -> list[Entry]:
    points = list(metadata.entry_points(group=GROUPS[kind]))
    with_origin = sorted(
        ((_origin(ep), ep) for ep in points), key=lambda p: (not p[0].builtin, p[0].distribution, p[1].name)
    )
    taken: dict[str, Entry] = {}
    out: list[Entry] = []
    for origin, ep in with_origin:
        if not origin.builtin and allow is not None and canonical(origin.distribution) not in allow:
            why = f"{origin.distribution} is not in MAAS_PLUGINS_ALLOW"
            entry = Entry(kind, ep.name, origin, reason=why, target=ep.value)
        elif ep.name in taken:
            first = taken[ep.name].origin.label
            entry = Entry(kind, ep.name, origin, reason=f"the name '{ep.name}' is taken by {first}", target=ep.value)
        else:
            plugin, why = _load(kind, ep, timeout)
            entry = Entry(kind, ep.name, origin, plugin, why, ep.value)
            if entry.available:
                taken[ep.name] = entry
        if not entry.available:
            log.warning("%s '%s' from %s is unavailable: %s", kind, entry.name[:64], origin.label, entry.reason)
        out.append(entry)
    return out


class Catalog:
    """The architectures and data sets one process may use, each kind read on first use."""

    def __init__(self, allow: Iterable[str] | None = None, timeout: float = 120.0) -> None:
        self.allow = None if allow is None else frozenset(canonical(a) for a in allow)
        self.timeout = timeout
        self._entries: dict[Kind, list[Entry]] = {}
        self._available: dict[Kind, dict[str, Entry]] = {}
        self._lock = threading.Lock()

    def entries(self, kind: Kind) -> list[Entry]:
        """Every entry of the kind, available or not, as read."""
        with self._lock:
            if kind not in self._entries:
                self._entries[kind] = _read(kind, self.allow, self.timeout)
                self._available[kind] = {e.name: e for e in self._entries[kind] if e.available}
                found = [f"{e.name} ({e.origin.label})" for e in self._available[kind].values()]
                log.info("%ss: %s", kind, ", ".join(found) or "none")
            return self._entries[kind]

    def get(self, kind: Kind, name: str) -> Entry | None:
        """The available entry of that name, or None."""
        if kind not in self._available:
            self.entries(kind)
        return self._available[kind].get(name)

    def refusal(self, kind: Kind, name: str) -> str:
        """Why an installed entry of that name cannot be used ("" if there is none)."""
        for entry in self.entries(kind):
            if entry.name == name and not entry.available:
                return entry.reason
        return ""

    def names(self, kind: Kind) -> list[str]:
        return sorted(e.name for e in self.entries(kind) if e.available)


_installed: Catalog | None = None
_installed_lock = threading.Lock()


def installed() -> Catalog:
    """This process's catalog, with the operator's MAAS_PLUGINS_ settings (read once)."""
    global _installed
    with _installed_lock:
        if _installed is None:
            settings = PluginSettings()
            _installed = Catalog(settings.allowed(), settings.timeout_seconds)
        return _installed


def timeout() -> float:
    """How long a plugin's build or load may take in this process."""
    return installed().timeout


def reset() -> None:
    """Forget the catalog read so far (tests install plugins at run time)."""
    global _installed
    with _installed_lock:
        _installed = None
