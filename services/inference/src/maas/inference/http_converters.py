"""Conversions between the Open Inference Protocol's HTTP/REST bodies (KServe V2) and the domain.

Paired to_x / from_x functions, as `converters` holds for gRPC; the HTTP routes call
these around one data-plane call. Metadata, configuration and statistics are built
by `converters` and written as the JSON Triton's HTTP endpoints answer (proto field
names, every field, 64-bit integers as numbers: perf_analyzer reads them so).

An inference body is a JSON object, optionally followed by binary tensor data
(Triton's binary tensor data extension): the `Inference-Header-Content-Length`
header says where the JSON ends; each input with `parameters.binary_data_size`
takes that many bytes of the rest, in input order. Inputs given as JSON `data`
(nested lists or flat, row-major) are checked for the datatype's JSON type here
and counted, shaped and range-checked by validation, as typed gRPC contents are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maas.common import errors
from maas.common.structs import message_dict
from maas.inference import converters
from maas.inference.domain import IndexEntry, InferRequest, InferResult, InputTensor, ModelOptions, Target

if TYPE_CHECKING:
    from maas.inference.served import ServedVersion
    from maas.inference.statistics import VersionStats

HEADER_LENGTH = "inference-header-content-length"
# Deepest nesting of an input's `data` (a tensor's rank, with room).
MAX_DATA_DEPTH = 32
_NAME = 64

# The JSON type each datatype's `data` elements must have (ints are floats' too: JSON writes 1.0 as 1).
_BOOL, _INT, _FLOAT, _STR = (bool,), (int,), (float, int), (str,)
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "BOOL": _BOOL,
    **{t: _INT for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")},
    "FP32": _FLOAT,
    "FP64": _FLOAT,
    "BYTES": _STR,
}
BINARY_ONLY = ("FP16", "BF16")


@dataclass(frozen=True, slots=True)
class OutputEncoding:
    """How each output of one answer travels: as JSON `data`, or as binary data after the JSON."""

    binary_default: bool
    binary: dict[str, bool]

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


# -------------------------------------------------------------- JSON bodies


def json_object(body: bytes, what: str = "request body") -> dict[str, Any]:
    """A JSON object from `body` (empty: {}), or InvalidArgument saying why not."""
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument(f"{what}: not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(f"{what}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise errors.InvalidArgument(f"{what}: nested too deeply") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument(f"{what}: must be a JSON object, not {_json_type(doc)}")
    return doc


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


def _field(doc: dict[str, Any], key: str, kinds: tuple[type, ...], where: str, default: Any = None) -> Any:
    value = doc.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise errors.InvalidArgument(f"{where}{key}: must be {' or '.join(_KIND_NAMES[k] for k in kinds)}")
    return value


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    float: "a number",
}


def is_length(text: str) -> bool:
    """A header's byte count: ASCII digits, few enough for int() (it refuses past 4,300 of them)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _shown(name: str) -> str:
    return name[:_NAME].encode("unicode_escape").decode("ascii")


# ---------------------------------------------------------------- inference


def from_infer_request(
    model: str, version: str, body: bytes, header_length: str | None
) -> tuple[InferRequest, OutputEncoding, float | None]:
    """The request, how its outputs are to travel, and its timeout in seconds (None: none).

    Nothing is copied: binary inputs are views into the body.
    """
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not is_length(header_length) or int(header_length) > len(body):
            raise errors.InvalidArgument(
                f"Inference-Header-Content-Length: '{_shown(header_length)}' is not a length within the "
                f"{len(body)}-byte body"
            )
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    doc = json_object(header, "inference request")
    request_id = _field(doc, "id", (str,), "", "")
    params = _field(doc, "parameters", (dict,), "", {})
    binary_default = _field(params, "binary_data_output", (bool,), "parameters.", False)
    timeout_us = _field(params, "timeout", (int,), "parameters.", 0)
    inputs_doc = _field(doc, "inputs", (list,), "", None)
    if not inputs_doc:
        raise errors.InvalidArgument("inputs: at least one input is required")
    inputs: list[InputTensor] = []
    raw: list[memoryview | None] = []
    offset = 0
    for i, item in enumerate(inputs_doc):
        tensor, size = _input(item, i)
        if size is None:
            raw.append(None)
        else:
            if offset + size > len(binary):
                raise errors.InvalidArgument(
                    f"input '{_shown(tensor.name)}': binary_data_size {size} runs past the {len(binary)} bytes "
                    "of binary data after the JSON"
                )
            raw.append(binary[offset : offset + size])
            offset += size
        inputs.append(tensor)
    if offset != len(binary):
        raise errors.InvalidArgument(
            f"binary data: {len(binary)} bytes after the JSON, the inputs' binary_data_size add up to {offset}"
        )
    outputs, binary_outputs = _outputs(_field(doc, "outputs", (list,), "", []))
    request = InferRequest(
        model,
        version,
        request_id,
        inputs,
        raw if any(r is not None for r in raw) else (),
        outputs,
    )
    timeout = timeout_us / 1e6 if timeout_us > 0 else None
    return request, OutputEncoding(binary_default, binary_outputs), timeout


def _input(item: Any, index: int) -> tuple[InputTensor, int | None]:
    if not isinstance(item, dict):
        raise errors.InvalidArgument(f"inputs[{index}]: must be an object with name, shape, datatype and data")
    where = f"inputs[{index}]."
    name = _field(item, "name", (str,), where, None)
    datatype = _field(item, "datatype", (str,), where, None)
    shape = _field(item, "shape", (list,), where, None)
    if name is None or datatype is None or shape is None:
        raise errors.InvalidArgument(f"inputs[{index}]: name, shape and datatype are required")
    if len(shape) > MAX_DATA_DEPTH or not all(type(d) is int for d in shape):
        raise errors.InvalidArgument(f"input '{_shown(name)}': shape must be a list of at most 32 integers")
    params = _field(item, "parameters", (dict,), where, {})
    size = _field(params, "binary_data_size", (int,), f"input '{_shown(name)}' parameters.", None)
    data = item.get("data")
    if size is not None:
        if size < 0:
            raise errors.InvalidArgument(f"input '{_shown(name)}': binary_data_size must be >= 0")
        if data is not None:
            raise errors.InvalidArgument(f"input '{_shown(name)}': both data and binary_data_size given")
        return InputTensor(name, datatype, tuple(shape), None), size
    if data is None:
        raise errors.InvalidArgument(f"input '{_shown(name)}': no data (give data, or binary_data_size)")
    return InputTensor(name, datatype, tuple(shape), _values(name, datatype, data)), None


def _values(name: str, datatype: str, data: Any) -> Sequence[Any]:
    """The flat, row-major values of an input's `data`, each of the datatype's JSON type."""
    if datatype in BINARY_ONLY:
        raise errors.InvalidArgument(
            f"input '{_shown(name)}': {datatype} travels only as binary data (parameters.binary_data_size)"
        )
    flat = _flatten(name, data)
    kinds = JSON_TYPES.get(datatype)
    if kinds is None:  # a datatype nothing serves: validation names it against the model's
        return flat
    for value in flat:
        if type(value) not in kinds:
            raise errors.InvalidArgument(
                f"input '{_shown(name)}': {_json_type(value)} in the data of a {datatype} input"
            )
    if kinds is _STR:
        return [value.encode("utf-8") for value in flat]
    return flat


def _flatten(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise errors.InvalidArgument(f"input '{_shown(name)}': data must be an array")
    if not any(isinstance(value, list) for value in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) >= MAX_DATA_DEPTH:
                    raise errors.InvalidArgument(f"input '{_shown(name)}': data nested too deeply")
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _outputs(items: list[Any]) -> tuple[Sequence[str], dict[str, bool]]:
    names: list[str] = []
    binary: dict[str, bool] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.InvalidArgument(f"outputs[{i}]: must be an object with a name")
        name = _field(item, "name", (str,), f"outputs[{i}].", None)
        if name is None:
            raise errors.InvalidArgument(f"outputs[{i}]: name is required")
        params = _field(item, "parameters", (dict,), f"outputs[{i}].", {})
        if "classification" in params:
            raise errors.InvalidArgument(f"output '{_shown(name)}': the classification extension is not served")
        flag = _field(params, "binary_data", (bool,), f"output '{_shown(name)}' parameters.", None)
        if flag is not None:
            binary[name] = flag
        names.append(name)
    return names, binary


def to_infer_response(result: InferResult, encoding: OutputEncoding) -> tuple[bytes, int | None]:
    """The body and, when binary data follows the JSON, the JSON's length (Inference-Header-Content-Length)."""
    served = result.served
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for spec, array in result.outputs:
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(array.shape)}
        if encoding.is_binary(spec.name):
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": served.model, "model_version": served.version_str}
    if result.request_id:
        doc["id"] = result.request_id
    doc["outputs"] = outputs
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)


# ------------------------------------------------------------ metadata etc.


def to_server_metadata(name: str, version: str, extensions: Sequence[str]) -> dict[str, Any]:
    return {"name": name, "version": version, "extensions": list(extensions)}


def to_model_metadata(served: ServedVersion) -> dict[str, Any]:
    return message_dict(converters.to_model_metadata(served))


def to_model_config(served: ServedVersion) -> dict[str, Any]:
    """The ModelConfig itself (Triton's HTTP answer is not wrapped in a response message)."""
    return message_dict(converters.to_model_config(served).config)


def to_statistics(stats: list[VersionStats]) -> dict[str, Any]:
    return message_dict(converters.to_statistics(stats))


def to_index(entries: list[IndexEntry]) -> list[dict[str, Any]]:
    """Triton's HTTP index is a bare array, of the entries gRPC's RepositoryIndex answers."""
    models: list[dict[str, Any]] = message_dict(converters.to_index(entries)).get("models", [])
    return models


def from_index_request(body: bytes) -> bool:
    """Whether only ready models are asked for."""
    ready: bool = _field(json_object(body), "ready", (bool,), "", False)
    return ready


def from_load_request(body: bytes) -> tuple[Target | None, ModelOptions | None]:
    params = _field(json_object(body), "parameters", (dict,), "", {})
    return converters.from_load_parameters(params)


def from_unload_request(body: bytes) -> None:
    """Checked only: one model is unloaded whatever `unload_dependents` says (nothing depends on another)."""
    params = _field(json_object(body), "parameters", (dict,), "", {})
    _field(params, "unload_dependents", (bool,), "parameters.", None)


def from_version_path(version: str) -> int | None:
    return converters.from_version_field(version)
