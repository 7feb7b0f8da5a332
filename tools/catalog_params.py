"""Generate (or check) the torchvision parameter table the registry checks weights against.

The registry does not import torch, yet it must refuse weights that the
catalog's torchvision networks could not load. This script builds every
torchvision entry twice, with two class counts, and writes each state_dict's
tensor names, shapes and safetensors dtypes to
services/common/src/maas/common/catalog_params.json; a dimension that follows
the class count is written as "num_classes". `--check` fails when the
committed table differs from what the installed torchvision builds
(tests/common/test_catalog_params.py checks the same, entry by entry).

    python tools/catalog_params.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "services" / "common" / "src" / "maas" / "common" / "catalog_params.json"
CLASSES = (1000, 7)
DTYPES = {"torch.float32": "F32", "torch.int64": "I64"}


def state_shapes(name: str, num_classes: int) -> list[tuple[str, list[int], str]]:
    import torchvision.models as tvm

    net = getattr(tvm, name)(weights=None, num_classes=num_classes)
    return [(k, list(v.shape), DTYPES[str(v.dtype)]) for k, v in net.state_dict().items()]


def table() -> dict[str, Any]:
    import torchvision

    from maas.common.architectures import TORCHVISION

    out: dict[str, list[list[Any]]] = {}
    for name in TORCHVISION:
        a, b = (state_shapes(name, n) for n in CLASSES)
        rows: list[list[Any]] = []
        for (key, dims, dtype), (key_b, dims_b, _) in zip(a, b, strict=True):
            assert key == key_b, (name, key, key_b)
            rows.append([key, [d if d == e else "num_classes" for d, e in zip(dims, dims_b, strict=True)], dtype])
        out[name] = rows
    return {"torchvision": torchvision.__version__.split("+")[0], "architectures": out}


def render(doc: dict[str, Any]) -> str:
    lines = ["{", f'  "torchvision": {json.dumps(doc["torchvision"])},', '  "architectures": {']
    names = list(doc["architectures"])
    for i, name in enumerate(names):
        rows = doc["architectures"][name]
        lines.append(f"    {json.dumps(name)}: [")
        lines += [f"      {json.dumps(r)}{',' if j < len(rows) - 1 else ''}" for j, r in enumerate(rows)]
        lines.append("    ]" + ("," if i < len(names) - 1 else ""))
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed table is stale")
    text = render(table())
    if parser.parse_args().check:
        if TABLE.read_text(encoding="utf-8") != text:
            print(f"{TABLE.relative_to(ROOT)} is stale: run python tools/catalog_params.py", file=sys.stderr)
            return 1
        return 0
    TABLE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
