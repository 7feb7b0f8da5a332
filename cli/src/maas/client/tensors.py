"""numpy arrays <-> Open Inference Protocol tensors (datatype, shape, raw bytes).

Raw contents are little-endian and row-major; BYTES elements are each prefixed
with their length as a 4-byte little-endian integer, as Triton's clients do.
Nothing here imports the generated protocol modules, so it can be used (and
tested) next to tritonclient.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from maas.common.errors import InvalidArgument

NUMPY_OF: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
# Which InferTensorContents field holds each datatype's typed values.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object and string arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    for name, code in NUMPY_OF.items():
        if np.dtype(code) == array.dtype.newbyteorder("<") or np.dtype(code) == array.dtype:
            return name
    raise InvalidArgument(f"arrays of {array.dtype} have no Open Inference Protocol datatype")


def as_datatype(array: Any, datatype: str) -> np.ndarray:
    """`array` converted to what `datatype` holds, little-endian and contiguous."""
    if datatype == "BYTES":
        return np.asarray(array, dtype=object)
    if datatype not in NUMPY_OF:
        raise InvalidArgument(f"datatype {datatype} is not supported by this client")
    return np.ascontiguousarray(np.asarray(array), dtype=np.dtype(NUMPY_OF[datatype]))


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in np.asarray(array, dtype=object).ravel():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return as_datatype(array, datatype).tobytes()


def from_raw(datatype: str, shape: list[int] | tuple[int, ...], raw: bytes) -> np.ndarray:
    dims = tuple(int(d) for d in shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise InvalidArgument("BYTES output is truncated")
            (n,) = struct.unpack_from("<I", raw, pos)
            items.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return np.array(items, dtype=object).reshape(dims)
    if datatype not in NUMPY_OF:
        raise InvalidArgument(f"datatype {datatype} is not supported by this client")
    dtype = np.dtype(NUMPY_OF[datatype])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) != count * dtype.itemsize:
        raise InvalidArgument(f"output of shape {list(dims)} {datatype} has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()


def from_contents(datatype: str, shape: list[int] | tuple[int, ...], contents: Any) -> np.ndarray:
    """Typed `InferTensorContents` (for servers that answer without raw contents)."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(f"datatype {datatype} has no typed contents")
    values = list(getattr(contents, field))
    dims = tuple(int(d) for d in shape)
    if datatype == "BYTES":
        return np.array(values, dtype=object).reshape(dims)
    return np.array(values, dtype=np.dtype(NUMPY_OF[datatype])).reshape(dims)
