"""`maas versions show REF`: a version as a model card, for people.

A header (the version, status, format, aliases, times), then one section
each for what the version holds: description, signature, architecture
(labels and normalization when it carries them), metrics, lineage (where it
came from) and artifacts. Sections with nothing to say are left out, so a
version registered before lineage was recorded prints without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from maas.cli import refs
from maas.cli.output import to_dict, when
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb

MAX_LABELS = 20


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def render(version: rpb.ModelVersion) -> str:
    arch = to_dict(version)["architecture"]
    sections = [
        ("", _header(version)),
        ("Description", [version.description] if version.description else []),
        ("Signature", _signature(version.signature)),
        ("Architecture", _architecture(arch)),
        ("Metrics", _pairs((k, f"{v:.6g}") for k, v in sorted(version.metrics.items()))),
        ("Lineage", _lineage(version) if version.HasField("lineage") else []),
        ("Artifacts", _artifacts(version.artifacts)),
        ("Tags", _pairs(sorted(version.tags.items()))),
    ]
    out: list[str] = []
    for title, lines in sections:
        if not lines:
            continue
        if out:
            out.append("")
        if title:
            out.append(title)
            out.extend(f"  {line}" for line in lines)
        else:
            out.extend(lines)
    return "\n".join(out)


def _pairs(items: Iterable[tuple[str, Any]]) -> list[str]:
    shown = [(k, str(v)) for k, v in items if v not in (None, "")]
    width = max((len(k) for k, _ in shown), default=0)
    return [f"{k:<{width}}  {v}" for k, v in shown]


def _header(v: rpb.ModelVersion) -> list[str]:
    status = refs.status_name(v.status) + (" (archived)" if v.archived else "")
    details = _pairs(
        [
            ("reason", v.status_reason),
            ("aliases", ", ".join(v.aliases)),
            ("run", "" if v.HasField("lineage") else v.run_id),
            ("created", when(v.created_at)),
            ("ready", when(v.ready_at)),
        ]
    )
    return [f"{v.model}/{v.version}  {status}  {refs.format_name(v.format)}", *details]


def _signature(sig: common_pb2.Signature) -> list[str]:
    rows = [
        (side, t.name, common_pb2.DataType.Name(t.datatype).removeprefix("DATA_TYPE_"), str(list(t.shape)))
        for side, items in (("input", sig.inputs), ("output", sig.outputs))
        for t in items
    ]
    return _columns(rows)


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _architecture(arch: dict[str, Any]) -> list[str]:
    if not arch:
        return []
    labels = [str(label) for label in arch.get("labels") or []]
    norm = arch.get("normalize") or {}
    shown_labels = ", ".join(labels[:MAX_LABELS]) + (f" ... ({len(labels)} in all)" if len(labels) > MAX_LABELS else "")
    return _pairs(
        [
            ("name", arch.get("name", "")),
            ("args", json.dumps(arch["args"], sort_keys=True) if arch.get("args") else ""),
            ("labels", shown_labels),
            ("normalization", f"mean {norm.get('mean')} std {norm.get('std')}" if norm else ""),
        ]
    )


def _lineage(v: rpb.ModelVersion) -> list[str]:
    lin = v.lineage
    ds = lin.dataset
    has_ds = lin.HasField("dataset")
    args = to_dict(ds).get("args") if has_ds else None
    parent = f"{lin.parent.model}/{lin.parent.version}" if lin.HasField("parent") else ""
    software = ", ".join(f"{k} {lin.software[k]}" for k in sorted(lin.software))
    return _pairs(
        [
            ("source", lin.source),
            ("job", lin.job_id),
            ("run", v.run_id),
            ("parent", parent),
            ("method", lin.method),
            ("arch origin", lin.architecture_origin),
            ("pretrained", f"{lin.pretrained.path} (sha256 {lin.pretrained.sha256})" if lin.pretrained.path else ""),
            ("dataset", ds.name if has_ds else ""),
            ("data origin", ds.origin if has_ds else ""),
            ("dataset args", json.dumps(args, sort_keys=True) if args else ""),
            ("dataset path", ds.path),
            ("fingerprint", ds.fingerprint),
            ("validation", f"{ds.validation_split:g} of the data, seed {ds.seed}" if has_ds and ds.name else ""),
            ("software", software),
        ]
    )


def _artifacts(artifacts: Sequence[rpb.Artifact]) -> list[str]:
    return _columns([(refs.format_name(a.format), human_bytes(a.size_bytes), f"sha256 {a.sha256}") for a in artifacts])
