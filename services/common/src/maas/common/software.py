"""Versions of the software that produced a version, for its lineage.

Each process reports what it imported itself (the trainer's worker its torch
and onnxruntime, the CLI only what it ran), read from the installed
distributions' metadata, never from a module's __version__.
"""

from __future__ import annotations

import platform
from importlib import metadata


def versions(maas_distribution: str, *distributions: str) -> dict[str, str]:
    """{"maas": <maas_distribution's version>, "python": ..., <each distribution>: ...}; absent ones left out."""
    out = {"python": platform.python_version()}
    for key, dist in (("maas", maas_distribution), *((d, d) for d in distributions)):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
