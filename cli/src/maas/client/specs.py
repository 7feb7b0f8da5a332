"""Job specs from documents: YAML or JSON files, Python dicts, command-line flags.

A document is the JobSpec message in protobuf's JSON form, with the proto's
field names (`register_as`) or their JSON names (`registerAs`):

    model: {name: mlp, args: {hidden: [128]}}
    dataset: {name: digits}
    epochs: 20
    register_as: digits
    promotion: {alias: production, metric: val_accuracy, threshold: 0.9}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from maas.common.errors import InvalidArgument
from maas.v1 import trainer_pb2 as pb


def job_spec(doc: Mapping[str, Any]) -> pb.JobSpec:
    """A JobSpec from its document; unknown fields and wrong types are InvalidArgument."""
    try:
        return json_format.ParseDict(dict(doc), pb.JobSpec())
    except json_format.ParseError as exc:
        raise InvalidArgument(f"job spec: {exc}") from None


def optimize_spec(
    source: str | pb.OptimizeSpec | Mapping[str, Any],
    *,
    quantize: str = "",
    method: str = "",
    formats: Iterable[str] = (),
    dataset: Mapping[str, Any] | None = None,
    register_as: str = "",
    promotion: Mapping[str, Any] | None = None,
    calibration_batches: int = 0,
) -> pb.OptimizeSpec:
    """An OptimizeSpec: a whole message or document, or a source ref and the keyword options."""
    if isinstance(source, pb.OptimizeSpec):
        return source
    if isinstance(source, Mapping):
        doc = dict(source)
    else:
        doc = {"source": source, "quantize": quantize, "method": method, "formats": list(formats)}
        doc.update(register_as=register_as, calibration_batches=calibration_batches)
        if dataset:
            doc["dataset"] = dict(dataset)
        if promotion:
            doc["promotion"] = dict(promotion)
    try:
        return json_format.ParseDict(doc, pb.OptimizeSpec())
    except json_format.ParseError as exc:
        raise InvalidArgument(f"optimize spec: {exc}") from None


def load_document(path: Path) -> dict[str, Any]:
    """A YAML or JSON file (YAML is a superset of JSON, so one parser reads both)."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot read spec file '{path}': {exc.strerror}") from None
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidArgument(
            f"spec file '{path}' is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first}"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"spec file '{path}' must hold a mapping of JobSpec fields")
    return doc


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else replaces."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def to_document(spec: pb.JobSpec) -> dict[str, Any]:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)
