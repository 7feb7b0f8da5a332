"""Architecture documents and the weights each one needs, without torch.

A model version stored as safetensors carries only weights; its architecture
is a small JSON document naming a catalog entry and its arguments:

    {"name": "lenet", "args": {"in_channels": 1, "num_classes": 10},
     "input_shape": [1, 8, 8], "normalize": {"mean": [4.88], "std": [6.02]},
     "labels": ["0", "1", ...]}

Nothing in it is executed: the name selects an installed catalog entry (a
plugin found through the `maas.architectures` entry points; the built-in
lenet, mlp and torchvision networks are registered the same way) and its
arguments are checked by that entry's pydantic model. The weights are exactly
the plain network's `state_dict()`: normalization comes from the document,
and a 1-channel input is repeated to 3 channels for the torchvision networks
without weights of its own.

`expected_tensors` says which tensors, shapes and dtypes an architecture
needs, so the registry (which never imports torch) can refuse weights no
runtime could load: the entry's own torch-free table, or, for a plugin that
gives none, the one torch's meta device reports for the module it builds.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from maas.common import plugins
from maas.common.builtin_architectures import MAX_WIDTH, TORCHVISION
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.common.plugins import MAX_CLASSES, TensorNeed
from maas.common.plugins import parameters as derived

MAX_DIM = 4096
# The built-in entries (registered by maas-common's entry points); `names()` lists what is installed.
NAMES = ("lenet", "mlp", *TORCHVISION)
__all__ = ["MAX_CLASSES", "MAX_DIM", "MAX_WIDTH", "NAMES", "TORCHVISION", "Architecture", "TensorNeed", "parse"]

# Weights saved before the plain layout: Normalized(net) with mean/std buffers,
# and Sequential(ToRGB(), net) inside it for 1-channel torchvision inputs.
LEGACY_PREFIX = "net."
LEGACY_RGB_PREFIX = "net.1."
LEGACY_BUFFERS = ("mean", "std")


def entry(name: Any, field: str = "architecture.name", noun: str = "architecture") -> plugins.Entry:
    """The installed entry `name` selects; InvalidArgument naming what is installed, or why it is unavailable."""
    catalog = plugins.installed()
    found = catalog.get("architecture", name) if isinstance(name, str) else None
    if found is not None:
        return found
    shown = str(name)[:40]
    refusal = catalog.refusal("architecture", shown) if isinstance(name, str) else ""
    if refusal:
        raise FailedPrecondition(f"{field}: '{shown}' is installed but unavailable: {refusal}")
    raise InvalidArgument(
        f"{field}: unknown {noun} '{shown}' (installed here: {', '.join(catalog.names('architecture'))}; "
        "a plugin architecture must be installed beside every service that handles it: trainer, inference, registry)"
    )


@dataclass(frozen=True)
class Architecture:
    """A validated architecture document, with its entry and its checked arguments."""

    name: str
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    input_name: str = "input"
    output_name: str = "logits"
    num_classes: int = 0
    entry: plugins.Entry | None = field(default=None, compare=False, repr=False)
    resolved: Any = field(default=None, compare=False, repr=False)

    @property
    def plugin(self) -> plugins.ArchitecturePlugin[Any]:
        return (self.entry or entry(self.name)).plugin  # type: ignore[no-any-return]

    @property
    def origin(self) -> plugins.Origin:
        return (self.entry or entry(self.name)).origin

    @property
    def to_rgb(self) -> bool:
        """A network fed 1-channel images that repeats the channel three times (the torchvision ones)."""
        return self.plugin.repeats_channels(self.resolved, self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "args": dict(self.args),
            "input_shape": list(self.input_shape),
            "input_name": self.input_name,
            "output_name": self.output_name,
        }
        if self.mean:
            doc["normalize"] = {"mean": list(self.mean), "std": list(self.std)}
        if self.labels:
            doc["labels"] = list(self.labels)
        return doc

    def signature(self) -> dict[str, Any]:
        """Input and output tensors, with -1 for the batch dimension."""
        inputs = self.plugin.signature_inputs(self.resolved, self.input_shape, self.input_name)
        return {
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [-1, *(t.shape or ())]} for t in inputs],
            "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, self.num_classes]}],
        }


def resolve_args(
    found: plugins.Entry, args: dict[str, Any], shape: tuple[int, ...], field: str = "architecture.args"
) -> Any:
    """The entry's arguments model for `args` (defaults filled in), checked against the input shape.

    A refusal names `field`: a version's document (architecture.args) or a job spec's (model.args).
    """
    plugin = found.plugin
    resolved = plugins.validate(plugin.Args, args, field, found.name, {"input_shape": shape})
    try:
        plugin.check(resolved, shape)
    except ValueError as exc:
        where = "architecture" if field == "architecture.args" else field
        raise InvalidArgument(f"{where}: {str(exc)[:300]}") from None
    return resolved


# ------------------------------------------------------------------ documents


def parse(doc: dict[str, Any]) -> Architecture:
    """Validate an architecture document; InvalidArgument names what is wrong."""
    if not isinstance(doc, dict):
        raise InvalidArgument("architecture: must be an object")
    found = entry(doc.get("name"))
    name = found.name
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise InvalidArgument("architecture.args: must be an object")
    raw_shape = doc.get("input_shape")
    if (
        not isinstance(raw_shape, list)
        or not 1 <= len(raw_shape) <= 4
        or not all(
            not isinstance(d, bool) and isinstance(d, int | float) and float(d).is_integer() and 1 <= d <= MAX_DIM
            for d in raw_shape
        )
    ):
        raise InvalidArgument("architecture.input_shape: 1-4 positive dimensions (without the batch)")
    shape = tuple(int(d) for d in raw_shape)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    norm = doc.get("normalize")
    if norm is not None:
        if not isinstance(norm, dict):
            raise InvalidArgument("architecture.normalize: must be an object with mean and std")
        mean = _floats(norm.get("mean"), "mean")
        std = _floats(norm.get("std"), "std")
        if len(mean) != len(std) or len(mean) not in (1, shape[0]):
            raise InvalidArgument("architecture.normalize: mean and std need 1 or input_shape[0] values each")
        if any(s <= 0 for s in std):
            raise InvalidArgument("architecture.normalize.std: values must be positive")
    labels = doc.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(lbl, str) and len(lbl) <= 200 for lbl in labels):
        raise InvalidArgument("architecture.labels: must be a list of short strings")
    input_name = doc.get("input_name", "input")
    output_name = doc.get("output_name", "logits")
    for key, value in (("input_name", input_name), ("output_name", output_name)):
        if not isinstance(value, str) or not value.isidentifier() or len(value) > 64:
            raise InvalidArgument(f"architecture.{key}: must be a short identifier")
    resolved = resolve_args(found, dict(args), shape)
    num_classes = int(resolved.num_classes)
    if labels and len(labels) != num_classes:
        raise InvalidArgument("architecture.labels: one label per class")
    return Architecture(
        name, dict(args), shape, mean, std, tuple(labels), input_name, output_name, num_classes, found, resolved
    )


def names() -> list[str]:
    """The architectures installed in this process."""
    return plugins.installed().names("architecture")


def _floats(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or len(value) > 64:
        raise InvalidArgument(f"architecture.normalize.{key}: must be a list of 1-64 numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidArgument(f"architecture.normalize.{key}: must be finite numbers")
        out.append(float(v))
    return tuple(out)


# ------------------------------------------------------------ the weights needed


def expected_tensors(arch: Architecture) -> dict[str, TensorNeed]:
    """Every tensor of the plain network's state_dict, in its order, with shape and dtype.

    A derived table costs a meta-device build, so tables are kept per name, arguments and shape.
    """
    key = (arch.name, json.dumps(arch.resolved.model_dump(mode="json"), sort_keys=True), arch.input_shape)
    table = _TABLES.get(key)
    if table is None:
        table = _table(arch)
        with _TABLES_LOCK:
            if len(_TABLES) >= MAX_TABLES:
                _TABLES.clear()
            _TABLES[key] = table
    return dict(table)


MAX_TABLES = 256
_TABLES: dict[tuple[str, str, tuple[int, ...]], dict[str, TensorNeed]] = {}
_TABLES_LOCK = threading.Lock()


def _table(arch: Architecture) -> dict[str, TensorNeed]:
    plugin, what, seconds = arch.plugin, f"architecture {arch.name} ({arch.origin.label})", plugins.timeout()
    table = plugins.within(
        seconds,
        f"{what}: its parameter table",
        lambda: plugin.parameters(arch.resolved, arch.num_classes, arch.input_shape),
    )
    if table is None:
        table = derived.derive(plugin, arch.resolved, arch.num_classes, arch.input_shape, seconds)
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, TensorNeed) for k, v in table.items()
    ):
        raise FailedPrecondition(f"{what}: its parameters() must return a dict of names to TensorNeed")
    return table


def plain_names(names: Iterable[str], arch: Architecture) -> dict[str, str]:
    """stored name -> plain state_dict name, for weights in the plain or the legacy layout.

    Weights written before the plain layout carry the wrapper's prefix ("net.",
    "net.1." for a 1-channel torchvision network) and its mean/std buffers; those
    buffers are left out of the map (`legacy_buffers` says whether there are any).
    A file in neither layout maps every name to itself.
    """
    stored = list(names)
    if not set(LEGACY_BUFFERS) <= set(stored):
        return {n: n for n in stored}
    rest = [n for n in stored if n not in LEGACY_BUFFERS]
    prefix = LEGACY_RGB_PREFIX if arch.to_rgb else LEGACY_PREFIX
    if not rest or not all(n.startswith(prefix) for n in rest):
        return {n: n for n in stored}
    return {n: n[len(prefix) :] for n in rest}


def is_legacy(names: Iterable[str], arch: Architecture) -> bool:
    stored = list(names)
    return len(plain_names(stored, arch)) != len(stored)


def describe(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
