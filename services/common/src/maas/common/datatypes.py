"""Tensor element types by their Open Inference Protocol names."""

from __future__ import annotations

# name -> bytes per element (BYTES is variable length: 0)
ITEM_SIZE: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
    "BYTES": 0,
}

DATATYPES = frozenset(ITEM_SIZE)
