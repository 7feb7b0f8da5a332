"""Checks an inference request against the served signature before any allocation.

Everything a client controls is bounded first (counts of inputs and outputs,
dimensions, element counts, byte lengths), and only then are the tensors
materialized. Raw contents become numpy arrays without a copy
(`np.frombuffer`); a text model's BYTES input becomes an object array of str,
each element bounded and then decoded as UTF-8 (the tokenizer runs later, in
the batcher). Every refusal is InvalidArgument naming the input. A
dimension of zero (batch or inner) is refused like a negative one: a tensor
with no elements has nothing to compute, and runtimes disagree on it.

It takes the domain's InferRequest (converters builds it from the protocol's
message), so this module needs no generated code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maas.common.errors import InvalidArgument
from maas.inference.domain import InferRequest, InputTensor
from maas.inference.tensors import BYTES, CONTENTS_FIELD, STRINGS, RawPlan, Signature

MAX_NAME_CHARS = 64


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    """Largest first dimension a batched request may carry (0: no limit from batching)."""
    max_elements: int
    """Largest element count of one input tensor."""
    max_strings: int = 0
    """Most strings one BYTES input may carry (0: no bound but the others)."""
    max_string_bytes: int = 0
    """Longest string of a BYTES input, in UTF-8 bytes (0: no bound but the message's)."""


@dataclass(slots=True)
class ParsedRequest:
    """Inputs in signature order, the request's rows and the outputs to return (built per request: slotted)."""

    arrays: list[np.ndarray]
    rows: int
    outputs: tuple[int, ...]


def _name(value: str) -> str:
    shown = value[:MAX_NAME_CHARS].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(value) > MAX_NAME_CHARS else "")


def parse(request: InferRequest, signature: Signature, limits: Limits) -> ParsedRequest:
    """The request's inputs as arrays, or InvalidArgument naming the first thing wrong."""
    raw = request.raw
    if raw and signature.raw_plan is not None and not request.outputs:
        parsed = _parse_plain_raw(request.inputs, raw, signature.raw_plan, limits)
        if parsed is not None:
            return parsed
    return _parse(request, signature, limits)


def _parse_plain_raw(
    inputs: Sequence[InputTensor], raw: Sequence[bytes | memoryview | None], plan: RawPlan, limits: Limits
) -> ParsedRequest | None:
    """The usual request, checked in a few comparisons; None for anything else.

    Every input given once, in signature order, as raw bytes, with the batch
    as the only variable dimension, and no requested outputs. Accepts exactly
    what `_parse` accepts for such a request and returns the same; on anything
    unusual it returns None and `_parse` decides (and words the error).
    """
    specs = plan.inputs
    if len(inputs) != len(specs) or len(raw) != len(specs):
        return None
    arrays: list[np.ndarray] = []
    rows = 0
    for (name, datatype, rank, tail, row_elements, dtype), tensor, data in zip(specs, inputs, raw, strict=False):
        if tensor.name != name or tensor.datatype != datatype:
            return None
        shape = tensor.shape
        if len(shape) != rank or shape[1:] != tail:
            return None
        batch = shape[0]
        if batch <= 0 or (rows and batch != rows) or (limits.max_batch_size and batch > limits.max_batch_size):
            return None
        rows = batch
        count = batch * row_elements
        if (
            data is None
            or tensor.contents is not None
            or count > limits.max_elements
            or len(data) != count * dtype.itemsize
        ):
            return None
        arrays.append(np.frombuffer(data, dtype=dtype).reshape(shape))
    return ParsedRequest(arrays, rows, plan.all_outputs)


def _parse(request: InferRequest, signature: Signature, limits: Limits) -> ParsedRequest:
    specs = signature.inputs
    inputs = request.inputs
    raw = request.raw
    given = len(inputs)
    if given > len(specs):
        extra = [t.name for t in inputs if t.name not in {s.name for s in specs}][:1]
        if not extra:
            names = [t.name for t in inputs]
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise InvalidArgument(f"input '{_name(twice)}': given twice (the model takes {len(specs)} inputs)")
        raise InvalidArgument(f"input '{_name(extra[0])}': not an input of this model (it takes {len(specs)})")
    if raw and len(raw) != given:
        raise InvalidArgument(
            f"raw_input_contents: {len(raw)} entries for {given} inputs (give one per input, or none)"
        )
    tensors = list(inputs)
    names = [t.name for t in tensors]
    if names != signature.input_names:
        by_name = {name: i for i, name in enumerate(names)}
        if len(by_name) != given:
            raise InvalidArgument("inputs: an input is given twice")
        for name in names:
            if all(s.name != name for s in specs):
                raise InvalidArgument(f"input '{_name(name)}': not an input of this model")
        for spec in specs:
            if spec.name not in by_name:
                raise InvalidArgument(f"input '{spec.name}': missing")
        order = [by_name[spec.name] for spec in specs]
    else:
        order = list(range(given))
    batched = signature.batched
    max_elements = limits.max_elements
    arrays: list[np.ndarray] = []
    rows = 0
    for spec, index in zip(specs, order, strict=True):
        tensor = tensors[index]
        if tensor.datatype != spec.datatype:
            raise InvalidArgument(
                f"input '{spec.name}': datatype {_name(tensor.datatype) or 'unset'}, expected {spec.datatype}"
            )
        shape = tensor.shape
        want_shape = spec.shape
        if len(shape) != len(want_shape):
            raise InvalidArgument(
                f"input '{spec.name}': rank {len(shape)} (shape {list(shape)[:8]}), expected shape {list(want_shape)}"
            )
        count = 1
        for dim, want in zip(shape, want_shape, strict=True):
            if dim <= 0:  # one rule for every dimension, the batch included: nothing to compute on
                raise InvalidArgument(f"input '{spec.name}': dimension {dim} in {list(shape)} (each must be >= 1)")
            if want != -1 and dim != want:
                raise InvalidArgument(f"input '{spec.name}': shape {list(shape)}, expected {list(want_shape)}")
            count *= dim
            if count > max_elements:
                raise InvalidArgument(f"input '{spec.name}': more than {max_elements} elements")
        if batched:
            if rows and shape[0] != rows:
                raise InvalidArgument(f"input '{spec.name}': batch of {shape[0]}, other inputs have {rows}")
            rows = shape[0]
            if limits.max_batch_size and rows > limits.max_batch_size:
                raise InvalidArgument(
                    f"input '{spec.name}': batch of {rows} exceeds max_batch_size {limits.max_batch_size}"
                )
        if spec.datatype == BYTES:
            arrays.append(_strings(spec.name, tensor, raw[index] if raw else None, shape, limits))
            continue
        dtype = spec.dtype
        data = raw[index] if raw else None
        if data is not None:
            if tensor.contents is not None:
                raise InvalidArgument(f"input '{spec.name}': both contents and raw_input_contents given")
            if len(data) != count * dtype.itemsize:
                raise InvalidArgument(
                    f"input '{spec.name}': {len(data)} raw bytes, expected {count * dtype.itemsize} "
                    f"({count} x {dtype.itemsize})"
                )
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            field = CONTENTS_FIELD.get(spec.datatype)
            if field is None:
                raise InvalidArgument(f"input '{spec.name}': {spec.datatype} is only accepted as raw_input_contents")
            values = tensor.contents if tensor.contents is not None else ()
            if len(values) != count:
                raise InvalidArgument(f"input '{spec.name}': {len(values)} values in {field}, expected {count}")
            array = _typed(values, dtype, spec.name).reshape(shape)
        arrays.append(array)
    outputs = _requested_outputs(request, signature) if request.outputs else signature.all_outputs
    return ParsedRequest(arrays, rows or 1, outputs)


def _strings(
    name: str, tensor: InputTensor, data: bytes | memoryview | None, shape: tuple[int, ...], limits: Limits
) -> np.ndarray:
    """A BYTES input as an object array of str: each element decoded as UTF-8, bounded before it is decoded.

    Raw contents hold each element as a 4-byte little-endian length and then
    its bytes, one after the other in row-major order (the KServe V2 / Triton
    layout tritonclient sends); typed contents hold one bytes_contents entry
    per element.
    """
    count = math.prod(shape)
    if limits.max_strings and count > limits.max_strings:
        raise InvalidArgument(
            f"input '{name}': {count} strings, more than the {limits.max_strings} one request may carry"
        )
    longest = limits.max_string_bytes
    out = np.empty(count, dtype=STRINGS)
    if data is None:
        values = tensor.contents if tensor.contents is not None else ()
        if len(values) != count:
            raise InvalidArgument(f"input '{name}': {len(values)} values in bytes_contents, expected {count}")
        for i, value in enumerate(values):
            if longest and len(value) > longest:
                raise InvalidArgument(f"input '{name}': element {i} is {len(value)} bytes, more than {longest}")
            out[i] = _utf8(value, name, i)
        return out.reshape(shape)
    if tensor.contents is not None:
        raise InvalidArgument(f"input '{name}': both contents and raw_input_contents given")
    view = memoryview(data)
    size = len(view)
    pos = 0
    for i in range(count):
        if pos + 4 > size:
            raise InvalidArgument(
                f"input '{name}': raw_input_contents ends before element {i} of {count} "
                "(each is a 4-byte little-endian length, then its bytes)"
            )
        length = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if longest and length > longest:
            raise InvalidArgument(f"input '{name}': element {i} is {length} bytes, more than {longest}")
        if pos + length > size:
            raise InvalidArgument(f"input '{name}': raw_input_contents ends inside element {i} ({length} bytes)")
        out[i] = _utf8(view[pos : pos + length], name, i)
        pos += length
    if pos != size:
        raise InvalidArgument(f"input '{name}': {size - pos} bytes in raw_input_contents after its {count} strings")
    return out.reshape(shape)


def _utf8(value: bytes | memoryview, name: str, index: int) -> str:
    try:
        return str(value, "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"input '{name}': element {index} is not valid UTF-8 (byte {exc.start})") from None


def _typed(values: Any, dtype: np.dtype, name: str) -> np.ndarray:
    try:
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            array = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise InvalidArgument(f"input '{name}': values out of range for {dtype.name}")
            return array.astype(dtype)
        return np.asarray(values, dtype=dtype)
    except OverflowError:  # a JSON integer past int64/uint64 (typed gRPC contents cannot be)
        raise InvalidArgument(f"input '{name}': values out of range for {dtype.name}") from None


def _requested_outputs(request: InferRequest, signature: Signature) -> tuple[int, ...]:
    wanted = request.outputs
    if not wanted:
        return tuple(range(len(signature.outputs)))
    if len(wanted) > len(signature.outputs):
        raise InvalidArgument(f"outputs: {len(wanted)} requested, the model has {len(signature.outputs)}")
    index = {t.name: i for i, t in enumerate(signature.outputs)}
    chosen: list[int] = []
    for name in wanted:
        i = index.get(name)
        if i is None:
            raise InvalidArgument(f"output '{_name(name)}': not an output of this model")
        if i in chosen:
            raise InvalidArgument(f"output '{_name(name)}': requested twice")
        chosen.append(i)
    return tuple(chosen)
