"""A text model's tokenizer.json, checked as data at upload (the registry needs neither tokenizers nor torch).

The tokenizers library's format is one JSON document; what the inference
service needs of it is checked here so that a version never carries a
tokenizer it cannot load: bounded size, UTF-8 JSON, a `model` object of a
known type (BPE, WordPiece, WordLevel, Unigram) with a non-empty vocabulary,
and a pad token (padding a batch to its longest text needs one). The full
parse is the inference service's, with the tokenizers library, at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maas.common import errors

# The bounds of maas.common.tokenization (MAX_TOKENIZER_BYTES, PAD_CANDIDATES), which imports tokenizers.
MAX_TOKENIZER_BYTES = 32 * 1024 * 1024
PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")
MODEL_TYPES = ("BPE", "WordPiece", "WordLevel", "Unigram")


def _refuse(reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"tokenizer: {reason}")


def looks_like_json(head: bytes) -> bool:
    """Whether a file's first bytes open a JSON object (after a BOM or whitespace)."""
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{"


def check(path: Path) -> None:
    """InvalidArgument naming the first thing that keeps the file from being a tokenizer.json."""
    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise _refuse(f"{size} bytes, more than the {MAX_TOKENIZER_BYTES} allowed")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise _refuse("not UTF-8 text (a tokenizer.json is JSON)") from None
    except (ValueError, RecursionError) as exc:
        raise _refuse(f"not JSON ({str(exc)[:120]})") from None
    if not isinstance(doc, dict):
        raise _refuse("not a JSON object")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise _refuse("no 'model' object (the tokenizers library's tokenizer.json has one)")
    kind = model.get("type")
    if kind not in MODEL_TYPES:
        raise _refuse(f"model.type '{str(kind)[:40]}' is not one of {', '.join(MODEL_TYPES)}")
    tokens = _vocabulary(model, kind)
    added = doc.get("added_tokens", [])
    if not isinstance(added, list) or not all(isinstance(a, dict) and isinstance(a.get("content"), str) for a in added):
        raise _refuse("added_tokens must be a list of objects with a 'content' string")
    tokens.update(a["content"] for a in added)
    if not any(token in tokens for token in PAD_CANDIDATES):
        raise _refuse(f"has no pad token (one of {', '.join(PAD_CANDIDATES)}): padding a batch needs one")


def _vocabulary(model: dict[str, Any], kind: str) -> set[str]:
    vocab = model.get("vocab")
    if kind == "Unigram":
        # [[piece, score], ...]
        if not isinstance(vocab, list) or not all(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in vocab
        ):
            raise _refuse("model.vocab of a Unigram model must be a list of [piece, score]")
        tokens = {item[0] for item in vocab}
    else:
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise _refuse(f"model.vocab of a {kind} model must map tokens to ids")
        tokens = set(vocab)
    if not tokens:
        raise _refuse("model.vocab is empty")
    return tokens
