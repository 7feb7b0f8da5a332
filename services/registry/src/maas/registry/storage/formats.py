"""Recognize artifact formats by content, never by name.

The registry never deserializes a model. It accepts only bytes that validate
as the declared format: safetensors (a bounded JSON header describing
contiguous, in-bounds tensors) or ONNX (a well-formed protobuf ModelProto at
the top level). Formats that carry code - pickle, torch.save and TorchScript
zips, torch.export archives - are recognized so the refusal can say what was
sent, and are accepted only when the operator trusts them.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from maas.common import errors
from maas.registry.entities import ModelFormat
from maas.registry.storage import tokenizer_checks

SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 100_000
# An ORT format model is a flatbuffer whose file identifier (bytes 4..8) is "ORTM".
ORT_FILE_IDENTIFIER = b"ORTM"
# An ExecuTorch program (.pte) is a flatbuffer whose file identifier is "ET12" (executorch's schema/program.fbs).
PTE_FILE_IDENTIFIER = b"ET12"


@dataclass(frozen=True)
class Sniffed:
    # safetensors, onnx, ort, pte, tokenizer, pickle, torch-zip, torchscript, torch-export, zip, gzip, unknown
    kind: str
    detail: str = ""


def sniff(path: Path) -> Sniffed:
    with path.open("rb") as f:
        head = f.read(64)
        size = path.stat().st_size
        if head[:2] == b"\x1f\x8b":
            return Sniffed("gzip")
        if head[:4] == b"PK\x03\x04":
            return _sniff_zip(path)
        if head[4:8] == ORT_FILE_IDENTIFIER:
            return Sniffed("ort")
        if head[4:8] == PTE_FILE_IDENTIFIER:
            return Sniffed("pte")
        # Validate safetensors before the pickle heuristic: a 640-byte header
        # (0x280) starts the file with 0x80 0x02, a pickle's PROTO opcode.
        problem = _safetensors_problem(f, size)
        if problem is None:
            return Sniffed("safetensors")
        if _looks_like_pickle(f, head, size):
            return Sniffed("pickle")
        if tokenizer_checks.looks_like_json(head):
            try:
                tokenizer_checks.check(path)
            except errors.InvalidArgument as exc:
                return Sniffed("unknown", exc.message)
            return Sniffed("tokenizer")
        onnx_problem = _onnx_problem(f, size)
        if onnx_problem is None:
            return Sniffed("onnx")
        return Sniffed("unknown", f"not safetensors ({problem}); not ONNX ({onnx_problem})")


def check(path: Path, declared: ModelFormat, trusted: bool) -> None:
    """Raise InvalidArgument unless the file at `path` is acceptable as `declared`."""
    found = sniff(path)
    if declared.carries_code and not trusted:
        raise errors.InvalidArgument(
            f"format {declared.value} carries code and is refused; the operator can enable trusted formats"
        )
    expected = {
        ModelFormat.SAFETENSORS: {"safetensors"},
        ModelFormat.ONNX: {"onnx"},
        ModelFormat.TORCHSCRIPT: {"torchscript"},
        ModelFormat.TORCH_EXPORT: {"torch-export"},
        ModelFormat.PICKLE: {"pickle", "torch-zip"},
        ModelFormat.ORT: {"ort"},
        ModelFormat.PTE: {"pte"},
        ModelFormat.TOKENIZER: {"tokenizer"},
    }[declared]
    if found.kind in expected:
        return
    if found.kind in _DESCRIBED:
        raise errors.InvalidArgument(
            f"content is {_describe(found.kind)}, not {declared.value}; "
            "formats that carry code are refused unless the operator enables trusted formats"
        )
    if found.kind == "tokenizer":
        raise errors.InvalidArgument(f"content is a tokenizer.json, not {declared.value} (upload it as TOKENIZER)")
    if declared == ModelFormat.TOKENIZER:
        if found.detail.startswith("tokenizer:"):  # JSON, but not a tokenizer the service can load
            raise errors.InvalidArgument(f"content is not a usable {found.detail}")
        what = f" (it is {found.kind})" if found.kind != "unknown" else ""
        raise errors.InvalidArgument(f"content is not a tokenizer.json, the tokenizers library's JSON{what}")
    reason = f": {found.detail}" if found.detail else ""
    raise errors.InvalidArgument(f"content is not valid {declared.value}{reason}")


_DESCRIBED = ("pickle", "torch-zip", "torchscript", "torch-export", "gzip", "zip")


def _describe(kind: str) -> str:
    return {
        "pickle": "a pickle stream",
        "torch-zip": "a torch.save archive (pickle inside)",
        "torchscript": "a TorchScript archive",
        "torch-export": "a torch.export archive",
        "gzip": "gzip-compressed data",
        "zip": "a zip archive",
    }.get(kind, kind)


def _looks_like_pickle(f: BinaryIO, head: bytes, size: int) -> bool:
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    # Protocols 0 and 1 have no header; they start with an opcode and end with STOP.
    if head[:1] in (b"(", b"]", b"}", b"c", b"(", b"I", b"S", b"V", b"N", b")", b"F", b"L") and size > 1:
        f.seek(size - 1)
        return f.read(1) == b"."
    return False


def _sniff_zip(path: Path) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return Sniffed("zip", "unreadable zip")
    leaf = {m.split("/", 1)[-1] for m in members}
    if any(m.endswith("archive_format") for m in members) or any("serialized_exported_program" in m for m in members):
        return Sniffed("torch-export")
    if "constants.pkl" in leaf or any(m.split("/", 1)[-1].startswith("code/") for m in members):
        return Sniffed("torchscript")
    if "data.pkl" in leaf:
        return Sniffed("torch-zip")
    return Sniffed("zip")


def _safetensors_problem(f: BinaryIO, size: int) -> str | None:
    """None when the file is well-formed safetensors, else what is wrong."""
    if size < 10:
        return "too short"
    f.seek(0)
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len < 2 or header_len > MAX_HEADER_BYTES:
        return "header length out of range"
    if 8 + header_len > size:
        return "header length past the end of the file"
    raw = f.read(header_len)
    if raw[:1] != b"{":
        return "header is not a JSON object"
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "header is not valid JSON"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    data_len = size - 8 - header_len
    spans: list[tuple[int, int]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "__metadata__ must map strings to strings"
            continue
        if len(spans) >= MAX_TENSORS:
            return "too many tensors"
        if not isinstance(info, dict):
            return f"tensor '{name[:40]}' is not an object"
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            return f"tensor '{name[:40]}' has an unknown dtype"
        if not isinstance(shape, list) or len(shape) > 16 or not all(isinstance(d, int) and d >= 0 for d in shape):
            return f"tensor '{name[:40]}' has an invalid shape"
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            return f"tensor '{name[:40]}' has offsets outside the data"
        elements = 1
        for d in shape:
            elements *= d
        if elements * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
            return f"tensor '{name[:40]}' shape does not match its byte range"
        spans.append((offsets[0], offsets[1]))
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            return "tensor byte ranges overlap or leave holes"
        position = end
    if position != data_len:
        return "tensor byte ranges do not cover the data"
    return None


def _read_varint(f: BinaryIO) -> int | None:
    result = 0
    for shift in range(0, 70, 7):
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
    return None


def _onnx_problem(f: BinaryIO, size: int) -> str | None:
    """Walk the top-level fields of an ONNX ModelProto without decoding it."""
    f.seek(0)
    seen: set[int] = set()
    while f.tell() < size:
        tag = _read_varint(f)
        if tag is None:
            return "truncated field tag"
        number, wire = tag >> 3, tag & 7
        if number == 0:
            return "invalid field number"
        if wire == 0:
            if _read_varint(f) is None:
                return "truncated varint"
        elif wire == 1:
            f.seek(8, 1)
        elif wire == 5:
            f.seek(4, 1)
        elif wire == 2:
            length = _read_varint(f)
            if length is None or f.tell() + length > size:
                return "length-delimited field past the end of the file"
            f.seek(length, 1)
        else:
            return "unsupported wire type"
        if f.tell() > size:
            return "truncated field"
        # ModelProto: 1 ir_version (varint), 7 graph (message), 8 opset_import (message).
        expected_wire = {1: 0, 7: 2, 8: 2}.get(number)
        if expected_wire is not None and wire != expected_wire:
            return f"field {number} has the wrong wire type"
        seen.add(number)
    if 1 not in seen or 7 not in seen:
        return "no ir_version or graph"
    return None
