"""Registering a model file built anywhere as a new version: `Registry.push` and `maas push`.

The format comes from the file's content, not its name: ONNX (a protobuf
ModelProto) or safetensors (a JSON header of tensors); anything else, a
torch.save or pickle file included, is refused here before anything is created.
Safetensors weights need an architecture document naming a catalog entry (it is
checked here with the registry's own torch-free parser); an ONNX graph carries
its own, and the registry reads its signature from it.

The model is created if needed, then the version (PENDING), then the file is
uploaded (sha256 first: the registry checks it) and the registry checks the
content before the version becomes READY. Whatever stops the push after the
version exists (a refusal, a lost connection, Ctrl-C) leaves it FAILED with the
reason, never PENDING.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maas.common import architectures, errors, names, software, text_task
from maas.common.clients.registry import RegistryClient
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb

Progress = Callable[[int, int], None]

FORMATS = {"onnx": pb.MODEL_FORMAT_ONNX, "safetensors": pb.MODEL_FORMAT_SAFETENSORS}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# Fields of onnx.ModelProto (onnx.proto) and their protobuf wire types: 0 varint, 2 length-delimited.
ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
ONNX_GRAPH = 7
WHAT_TO_SEND = "push an ONNX model or a safetensors file of the network's state_dict (safetensors.torch.save_file)"


def detect_format(path: Path | str) -> str:
    """'onnx' or 'safetensors' from the content; InvalidArgument saying what the file is otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(64)
            size = path.stat().st_size
            if _is_safetensors(f, size):
                return "safetensors"
            if _is_onnx(f, size):
                return "onnx"
    except FileNotFoundError:
        raise errors.InvalidArgument(f"{path}: no such file") from None
    except IsADirectoryError:
        raise errors.InvalidArgument(f"{path}: is a directory, not a model file") from None
    except OSError as exc:
        raise errors.InvalidArgument(f"{path}: cannot read it: {exc.strerror}") from None
    raise errors.InvalidArgument(f"{path}: {_describe(head, size)}; {WHAT_TO_SEND}")


def _describe(head: bytes, size: int) -> str:
    if size == 0:
        return "empty file"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save or TorchScript: code the registry never loads), neither ONNX nor safetensors"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a pickle stream (code the registry never loads), neither ONNX nor safetensors"
    return "neither ONNX nor safetensors"


def _is_safetensors(f: Any, size: int) -> bool:
    if size < 10:
        return False
    f.seek(0)
    (length,) = struct.unpack("<Q", f.read(8))
    if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
        return False
    try:
        header = json.loads(f.read(length))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(header, dict)


def _varint(f: Any) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte or shift > 63:
            raise ValueError("truncated varint")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7


def _is_onnx(f: Any, size: int) -> bool:
    """Every top-level field is one of ModelProto's with its wire type, and a graph is there.

    A cheap walk over the top-level fields (a graph's bytes are skipped, not parsed) so that
    a text, an image or a pickle is not sent as a model; the registry decodes it fully.
    """
    f.seek(0)
    seen_graph = False
    try:
        while f.tell() < size:
            key = _varint(f)
            number, wire = key >> 3, key & 7
            if ONNX_MODEL_FIELDS.get(number) != wire:
                return False
            if wire == 0:
                _varint(f)
            else:
                length = _varint(f)
                end = f.tell() + length
                if end > size:
                    return False
                f.seek(end)
            seen_graph = seen_graph or number == ONNX_GRAPH
    except ValueError:
        return False
    return seen_graph


def architecture_document(
    format: str,
    architecture: Mapping[str, Any] | str | None = None,
    *,
    args: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The version's architecture: a whole document, or a catalog name with `args`; the other
    arguments set their keys on it. Safetensors needs a catalog architecture (checked here);
    for ONNX only `labels` apply (the graph holds the rest, normalization included)."""
    doc: dict[str, Any] = dict(architecture) if isinstance(architecture, Mapping) else {}
    if isinstance(architecture, str):
        doc["name"] = architecture
    if args:
        doc["args"] = {**doc.get("args", {}), **args}
    if input_shape is not None:
        doc["input_shape"] = [int(d) for d in input_shape]
    if normalize is not None:
        mean, std = (normalize["mean"], normalize["std"]) if isinstance(normalize, Mapping) else normalize
        doc["normalize"] = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    if labels is not None:
        doc["labels"] = [str(label) for label in labels]
    if format == "onnx":
        extra = sorted(set(doc) - {"labels", "task", "text"})
        if extra:
            raise errors.InvalidArgument(
                f"an ONNX model carries its own architecture, inputs and normalization; "
                f"only labels (and a text model's task and max_length) apply to it (given: {', '.join(extra)})"
            )
        text_task.max_length_of(doc)
        return doc
    if not doc.get("name"):
        raise errors.InvalidArgument(
            "safetensors weights need an architecture: --architecture NAME --arg KEY=VALUE --input-shape C,H,W "
            f"or --architecture-file (catalog names: {', '.join(architectures.NAMES)})"
        )
    if "input_shape" not in doc:
        raise errors.InvalidArgument(
            "safetensors weights need the input shape without the batch (--input-shape 3,224,224)"
        )
    architectures.parse(doc)
    return doc


def text_architecture(
    format: str,
    path: Path,
    architecture: Mapping[str, Any] | str | None,
    tokenizer: Path | str | None,
    max_length: int | None,
) -> dict[str, Any]:
    """The architecture of a text classifier, after checking here what can be checked before anything is created.

    The graph's inputs are read with onnx and the tokenizer is loaded with
    tokenizers, the way the service loads it, where those libraries are
    installed; the registry checks both again at upload either way.
    """
    if tokenizer is None or max_length is None:
        raise errors.InvalidArgument("a text model needs both its tokenizer (--tokenizer) and --max-length")
    if format != "onnx":
        raise errors.InvalidArgument(f"{path}: a text model is pushed as ONNX (a graph taking input_ids)")
    if isinstance(architecture, str):
        raise errors.InvalidArgument("an ONNX text model takes no catalog architecture")
    doc = {**(architecture or {}), **text_task.text_document(max_length)}
    _check_text_graph(path)
    _check_tokenizer(Path(tokenizer), max_length)
    return doc


def _check_text_graph(path: Path) -> None:
    try:
        import onnx
    except ImportError:
        return
    try:
        graph = onnx.load_model(str(path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a damaged file
        raise errors.InvalidArgument(f"{path}: not a readable ONNX model ({str(exc)[:120]})") from None
    given = {i.name for i in graph.initializer}  # older exporters list initializers as inputs too

    def spec(value: Any) -> tuple[str, str, int]:
        tensor = value.type.tensor_type
        names = onnx.TensorProto.DataType
        kind = names.Name(tensor.elem_type) if tensor.elem_type in names.values() else "an unknown type"
        kind = "FP32" if kind == "FLOAT" else kind
        return value.name, kind, len(tensor.shape.dim)

    try:
        text_task.check_graph([spec(v) for v in graph.input if v.name not in given], [spec(v) for v in graph.output])
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"{path}: {exc.message}") from None


def _check_tokenizer(path: Path, max_length: int) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.InvalidArgument(f"{path}: cannot read the tokenizer: {exc.strerror}") from None
    try:
        from maas.common import tokenization
    except ImportError:  # tokenizers is not installed here: the registry checks it
        return
    try:
        tokenization.load(data, max_length)
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"{path}: {exc.message}") from None


def _signature(format: str, doc: Mapping[str, Any]) -> common_pb2.Signature | None:
    if format != "safetensors":
        return None  # the registry reads an ONNX graph's own

    def specs(items: list[dict[str, Any]]) -> list[common_pb2.TensorSpec]:
        return [
            common_pb2.TensorSpec(
                name=t["name"],
                datatype=common_pb2.DataType.Value(f"DATA_TYPE_{t['datatype']}"),  # type: ignore[arg-type]
                shape=t["shape"],
            )
            for t in items
        ]

    sig = architectures.parse(dict(doc)).signature()
    return common_pb2.Signature(inputs=specs(sig["inputs"]), outputs=specs(sig["outputs"]))


async def push(
    registry: RegistryClient,
    model: str,
    path: Path | str,
    *,
    architecture: Mapping[str, Any] | str | None = None,
    args: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | Mapping[str, Sequence[float]] | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    run_id: str = "",
    metrics: Mapping[str, float] | None = None,
    promote: str | None = None,
    progress: Progress | None = None,
    lineage: pb.Lineage | None = None,
    tokenizer: Path | str | None = None,
    max_length: int | None = None,
) -> pb.ModelVersion:
    """Register the file as a new version of `model` (created if needed) and return it READY.

    Its lineage is `lineage` (a parent, a data set, ...) with source "push" unless it names
    another, and the maas and python versions of this process unless it gives them. With
    `tokenizer` (a tokenizer.json) and `max_length` the ONNX model is a text classifier: its
    graph must take input_ids and attention_mask, and the tokenizer is uploaded before the
    model, so the version is never READY without it.
    """
    path = Path(path)
    format = detect_format(path)
    if tokenizer is not None or max_length is not None:
        architecture = text_architecture(format, path, architecture, tokenizer, max_length)
    doc = architecture_document(
        format, architecture, args=args, input_shape=input_shape, labels=labels, normalize=normalize
    )
    if tokenizer is None and text_task.max_length_of(doc) is not None:
        raise errors.InvalidArgument("a text model needs its tokenizer (--tokenizer tokenizer.json) to be served")
    names.model_name(model)
    if promote:
        names.alias_name(promote, "promote")
    await registry.ensure_model(model)
    version = await registry.create_version(
        model,
        format=FORMATS[format],
        architecture=doc,
        signature=_signature(format, doc),
        run_id=run_id,
        description=description,
        tags=tags,
        metrics=metrics,
        lineage=with_defaults(lineage, "push", software.versions("maas")),
    )
    number = version.version
    try:
        if tokenizer is not None:
            await registry.upload_artifact(model, number, Path(tokenizer), format=pb.MODEL_FORMAT_TOKENIZER)
        ready = await registry.upload_artifact(model, number, path, progress=progress)
    except BaseException as exc:
        await _leave_failed(registry, model, number, _reason(exc))
        if isinstance(exc, errors.MaasError):
            raise type(exc)(f"{model}/{number} is FAILED: {exc.message}") from None
        raise
    if ready.status != pb.VERSION_STATUS_READY:
        raise errors.FailedPrecondition(f"{model}/{number} is {pb.VersionStatus.Name(ready.status)} after its upload")
    if promote:
        await registry.set_alias(model, promote, number)
        ready = await registry.get_version(model, number)
    return ready


def with_defaults(lineage: pb.Lineage | None, source: str, versions: Mapping[str, str]) -> pb.Lineage:
    """A copy of `lineage` with `source` if it names none and `versions` under the software it gives."""
    out = pb.Lineage(source=source, software=dict(versions))
    if lineage is not None:
        out.MergeFrom(lineage)  # its source replaces ours when set; its software entries win
    return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "upload interrupted"
    if isinstance(exc, errors.MaasError):
        return " ".join(exc.message.split())[:500]
    return f"upload failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


async def _leave_failed(registry: RegistryClient, model: str, version: int, reason: str) -> None:
    """FailVersion unless the registry has already ended it (a refusal leaves it FAILED itself)."""
    with contextlib.suppress(Exception):
        current = await registry.get_version(model, version)
        if current.status == pb.VERSION_STATUS_PENDING:
            await registry.fail_version(model, version, reason)
