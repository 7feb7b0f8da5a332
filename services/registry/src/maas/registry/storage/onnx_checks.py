"""What the serving onnxruntime will accept of an ONNX upload, decided without running it.

The file is decoded as a ModelProto (protobuf only; `onnx` runs no model code
and loads no external data here): its IR version and every operator set must
be ones the pinned onnxruntime supports, no tensor may live in external data
(the service never reads a file outside the upload), and the graph's inputs
(less its initializers) and outputs become the version's signature.

The limits below are those of onnxruntime as pinned in
requirements/constraints.txt; tests/registry/test_onnx_limits.py loads models
at and just past each limit with the installed onnxruntime, so a new pin that
moves them fails until they are updated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from maas.common import errors
from maas.registry.entities import Signature, TensorSpec

MAX_IR_VERSION = 14
# operator set domain -> the newest version onnxruntime implements
MAX_OPSET = {"": 28, "ai.onnx": 28, "ai.onnx.ml": 5, "com.microsoft": 1}
MAX_ONNX_BYTES = 2**31 - 1  # protobuf's limit for one message
MAX_NAME = 256
MAX_TENSORS = 256

DATATYPE: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}


def _refuse(reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"onnx: {reason}")


def check(path: Path) -> Signature:
    """The graph's signature; InvalidArgument names the first thing onnxruntime would not serve."""
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise _refuse(f"larger than {MAX_ONNX_BYTES} bytes, protobuf's limit for one model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError):
        raise _refuse("the file is not a valid ONNX model (its protobuf does not decode)") from None
    if not model.HasField("graph"):
        raise _refuse("the model has no graph")
    if model.ir_version > MAX_IR_VERSION:
        raise _refuse(
            f"IR version {model.ir_version} is newer than the serving onnxruntime supports ({MAX_IR_VERSION})"
        )
    _check_opsets(model)
    for where, tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise _refuse(f"tensor '{tensor.name[:80]}' ({where}) is stored in external data, which is refused")
    return _signature(model.graph)


def _check_opsets(model: onnx.ModelProto) -> None:
    local = {f.domain for f in model.functions}
    if not model.opset_import:
        raise _refuse("the model imports no operator set")
    for opset in model.opset_import:
        if opset.domain in local:
            continue
        newest = MAX_OPSET.get(opset.domain)
        if newest is None:
            raise _refuse(f"operator set domain '{opset.domain[:80]}' is not one the serving onnxruntime implements")
        if opset.version > newest:
            domain = opset.domain or "ai.onnx"
            raise _refuse(
                f"opset {opset.version} of {domain} is newer than the serving onnxruntime supports ({newest})"
            )


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor the model holds: initializers, sparse ones, and constants in attributes, in subgraphs too."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    for tensor in graph.initializer:
        yield "initializer", tensor
    for sparse in graph.sparse_initializer:
        yield "sparse initializer", sparse.values
        yield "sparse initializer", sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    where = f"attribute of node '{node.name[:80]}'"
    for attr in node.attribute:
        if attr.HasField("t"):
            yield where, attr.t
        for tensor in attr.tensors:
            yield where, tensor
        if attr.HasField("sparse_tensor"):
            yield where, attr.sparse_tensor.values
        for sparse in attr.sparse_tensors:
            yield where, sparse.values
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def _signature(graph: onnx.GraphProto) -> Signature:
    initializers = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    inputs = tuple(_spec(v, "input") for v in graph.input if v.name not in initializers)
    outputs = tuple(_spec(v, "output") for v in graph.output)
    if not outputs:
        raise _refuse("the graph has no outputs")
    if len(inputs) > MAX_TENSORS or len(outputs) > MAX_TENSORS:
        raise _refuse(f"the graph has more than {MAX_TENSORS} inputs or outputs")
    return Signature(inputs, outputs)


def _spec(value: onnx.ValueInfoProto, side: str) -> TensorSpec:
    name = value.name
    if not name or len(name) > MAX_NAME:
        raise _refuse(f"an {side} has no name or one longer than {MAX_NAME} characters")
    if not value.type.HasField("tensor_type"):
        raise _refuse(f"{side} '{name}' is not a tensor (sequences, maps and optionals cannot be served)")
    tensor_type = value.type.tensor_type
    datatype = DATATYPE.get(tensor_type.elem_type)
    if datatype is None:
        type_name = onnx.TensorProto.DataType.Name(tensor_type.elem_type) if tensor_type.elem_type else "undefined"
        raise _refuse(f"{side} '{name}' has element type {type_name}, which cannot be served")
    if not tensor_type.HasField("shape"):
        raise _refuse(f"{side} '{name}' has no shape (its rank is unknown)")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    if len(dims) > 16:
        raise _refuse(f"{side} '{name}' has rank {len(dims)}, more than 16")
    return TensorSpec(name, datatype, dims)


def agree(declared: Signature, found: Signature) -> None:
    """Refuse a signature given at CreateVersion that the graph contradicts (the first difference)."""
    for side, want, have in (("input", declared.inputs, found.inputs), ("output", declared.outputs, found.outputs)):
        by_name = {t.name: t for t in have}
        if side == "input" and {t.name for t in want} != set(by_name):
            raise _refuse(
                f"the version's signature names inputs {sorted(t.name for t in want)}, the graph has {sorted(by_name)}"
            )
        for spec in want:
            got = by_name.get(spec.name)
            if got is None:
                raise _refuse(f"output '{spec.name}' of the version's signature is not an output of the graph")
            if got.datatype != spec.datatype:
                raise _refuse(
                    f"{side} '{spec.name}' is {got.datatype} in the graph, the signature says {spec.datatype}"
                )
            if len(got.shape) != len(spec.shape) or any(
                a != b and -1 not in (a, b) for a, b in zip(got.shape, spec.shape, strict=True)
            ):
                raise _refuse(
                    f"{side} '{spec.name}' has shape {list(got.shape)} in the graph, "
                    f"the signature says {list(spec.shape)}"
                )
