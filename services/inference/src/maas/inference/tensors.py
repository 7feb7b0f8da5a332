"""Tensor specs and the Open Inference Protocol's datatypes as numpy sees them.

Kept free of generated protocol code: the in-process unit tests import this
(and validation and batcher) next to tritonclient, whose generated modules
register the same `inference.*` proto symbols as ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Little-endian numpy dtype of each datatype the service computes with. BF16 (no
# numpy type) is not served; BYTES (variable length) only as a text model's
# input, where validation decodes each element to a Python str (an object array).
NUMPY_DTYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in NUMPY_DTYPE.items()}
BYTES = "BYTES"
STRINGS = np.dtype(object)

# Which typed `contents` field carries each datatype (FP16 travels raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @cached_property
    def dtype(self) -> np.dtype:
        return STRINGS if self.datatype == BYTES else NUMPY_DTYPE[self.datatype]


@dataclass(frozen=True)
class RawPlan:
    """What validation's fast path compares a raw request with, computed once per signature.

    Per input: name, datatype, rank, the dimensions after the batch (all
    fixed), elements per row and the numpy dtype.
    """

    inputs: tuple[tuple[str, str, int, tuple[int, ...], int, np.dtype], ...]
    all_outputs: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """What a served version takes and returns.

    `batched` means every input and output has a variable first dimension:
    requests may carry several rows and the batcher may stack them.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @cached_property
    def batched(self) -> bool:
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))

    @cached_property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @cached_property
    def all_outputs(self) -> tuple[int, ...]:
        return tuple(range(len(self.outputs)))

    @cached_property
    def raw_plan(self) -> RawPlan | None:
        """For batched signatures whose only variable dimension is the batch (None otherwise)."""
        if not self.batched:
            return None
        inputs = []
        for t in self.inputs:
            tail = t.shape[1:]
            if any(d <= 0 for d in tail) or t.datatype not in NUMPY_DTYPE:
                return None
            inputs.append((t.name, t.datatype, len(t.shape), tail, math.prod(tail), t.dtype))
        return RawPlan(tuple(inputs), self.all_outputs)

    def check_servable(self) -> None:
        """Raise ValueError naming the first tensor the service cannot carry."""
        if not self.inputs or not self.outputs:
            raise ValueError("the signature needs at least one input and one output")
        names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError("tensor names must be unique and non-empty")
        for t in (*self.inputs, *self.outputs):
            if t.datatype not in NUMPY_DTYPE:
                raise ValueError(f"tensor '{t.name}': datatype {t.datatype or 'unset'} is not served")
            if any(d < -1 or d == 0 for d in t.shape):
                raise ValueError(f"tensor '{t.name}': invalid shape {list(t.shape)}")

    def example_shape(self, spec: TensorSpec, rows: int) -> tuple[int, ...]:
        """A concrete shape for warm-up: `rows` for the batch, 1 for other variable dims."""
        dims = [d if d > 0 else 1 for d in spec.shape]
        if self.batched:
            dims[0] = rows
        return tuple(dims)


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
