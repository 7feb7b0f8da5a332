"""google.protobuf.Struct, and messages as JSON, as plain data: shared by the services and the CLI."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

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


INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data: proto field names, defaults included, 64-bit integers as numbers.

    What the CLI's --json prints and the inference service's HTTP face answers (Triton's
    HTTP endpoints write 64-bit integers as numbers too, and their clients parse them so).
    """
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(message.DESCRIPTOR, doc)


def _numbers(descriptor: Any, doc: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name not in doc:
            continue
        value = doc[field.name]
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct":
            doc[field.name] = integral(value)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type in INT64_TYPES:
                doc[field.name] = {k: int(v) for k, v in value.items()}
            elif value_field.message_type is not None and not _is_wkt(value_field.message_type):
                doc[field.name] = {k: _numbers(value_field.message_type, v) for k, v in value.items()}
        elif field.type in INT64_TYPES:
            doc[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None and not _is_wkt(field.message_type):
            if isinstance(value, list):
                doc[field.name] = [_numbers(field.message_type, v) for v in value]
            elif isinstance(value, dict):
                doc[field.name] = _numbers(field.message_type, value)
    return doc


def _is_wkt(descriptor: Any) -> bool:
    return str(descriptor.full_name).startswith("google.protobuf.")
