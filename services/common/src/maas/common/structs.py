"""google.protobuf.Struct as plain data, shared by the services and the CLI."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from maas.common.errors import InvalidArgument


def integral(value: Any) -> Any:
    """Struct numbers are doubles; whole ones read better (and parse) as ints (num_classes: 10)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def from_struct(value: struct_pb2.Struct, field: str = "struct") -> dict[str, Any]:
    """A Struct as a dict, whole numbers as ints.

    A Struct can carry NaN and +-Inf, which JSON cannot: they are refused as
    InvalidArgument naming `field` and the path to the number, here where the
    request is read (json_format.MessageToDict raised ValueError, an INTERNAL).
    """
    return {key: _plain(item, f"{field}.{key[:40]}") for key, item in value.fields.items()}


def _plain(value: struct_pb2.Value, field: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise InvalidArgument(f"{field}: must be a finite number")
        return integral(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value, field)
    if kind == "list_value":
        return [_plain(item, f"{field}[{i}]") for i, item in enumerate(value.list_value.values)]
    return None  # null_value, or a Value with no kind set
