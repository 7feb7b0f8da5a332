"""The plugin SDK: architectures and data sets the operator installs, found through entry points.

A distribution adds catalog entries by declaring them in its pyproject.toml:

    [project.entry-points."maas.architectures"]
    conv1d = "my_package:Conv1d"          # an ArchitecturePlugin subclass or instance
    [project.entry-points."maas.datasets"]
    waveforms = "my_package:Waveforms"    # a DatasetPlugin subclass or instance

The built-in catalog is registered the same way by maas's own distributions.
See `interface` for what a plugin declares and `discovery` for how entries are
found, allowed and refused.
"""

from maas.common.plugins.arguments import Argument, describe, validate
from maas.common.plugins.bounded import within
from maas.common.plugins.discovery import (
    BUILTIN_DISTRIBUTIONS,
    KINDS,
    Catalog,
    Entry,
    Kind,
    Origin,
    PluginSettings,
    installed,
    reset,
    timeout,
)
from maas.common.plugins.interface import (
    DATATYPES,
    MAX_CLASSES,
    ArchitectureArgs,
    ArchitecturePlugin,
    DatasetArgs,
    DatasetPlugin,
    DatasetShape,
    DataSource,
    LoadedData,
    LoadOptions,
    TensorNeed,
    TensorSpec,
    safe_path,
)

__all__ = [
    "BUILTIN_DISTRIBUTIONS",
    "DATATYPES",
    "KINDS",
    "MAX_CLASSES",
    "ArchitectureArgs",
    "ArchitecturePlugin",
    "Argument",
    "Catalog",
    "DataSource",
    "DatasetArgs",
    "DatasetPlugin",
    "DatasetShape",
    "Entry",
    "Kind",
    "LoadOptions",
    "LoadedData",
    "Origin",
    "PluginSettings",
    "TensorNeed",
    "TensorSpec",
    "describe",
    "installed",
    "reset",
    "safe_path",
    "timeout",
    "validate",
    "within",
]
