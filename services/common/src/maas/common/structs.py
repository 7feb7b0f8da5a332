"""google.protobuf.Struct as plain data, shared by the services and the CLI."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2


def integral(value: Any) -> Any:
    """Struct numbers are doubles; whole ones read better (and parse) as ints (num_classes: 10)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a dict, whole numbers as ints."""
    doc: dict[str, Any] = integral(json_format.MessageToDict(value))
    return doc
