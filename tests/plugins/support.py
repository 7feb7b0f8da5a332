"""Distributions written at test time: a package and its .dist-info with entry points.

`importlib.metadata` finds a distribution by its `NAME-VERSION.dist-info`
folder on sys.path (or a spawned service's PYTHONPATH), so a test can install
a plugin, a broken one or a malicious one without pip.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_distribution(
    root: Path,
    name: str,
    version: str = "1.0",
    *,
    modules: dict[str, str],
    architectures: dict[str, str] | None = None,
    datasets: dict[str, str] | None = None,
) -> Path:
    """Write modules (name -> source) and NAME-VERSION.dist-info declaring the entry points under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in (("maas.architectures", architectures), ("maas.datasets", datasets)):
        if entries:
            lines.append(f"[{group}]")
            lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root
