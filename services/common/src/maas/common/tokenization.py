"""Text to model inputs, the same way in the trainer and in the inference service.

A text model version carries a `tokenizer.json` (the `tokenizers` library's
format: data, never code) and `"text": {"max_length": N}` in its architecture
document. Both the trainer (what the model learns from) and the inference
service (what it is called with) turn strings into `input_ids` and
`attention_mask` through `encode_batch` here, so the two can never disagree:
truncation to `max_length` tokens (special tokens included) and padding to the
longest sequence of the batch with the tokenizer's pad token. The attention
mask is 1 on real tokens and 0 on padding, so padding does not change what an
encoder predicts for a text.

Needs `tokenizers` and numpy (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from maas.common.errors import InvalidArgument

MAX_TOKENIZER_BYTES = 32 * 1024 * 1024
MAX_LENGTH_LIMIT = 8192
PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")


@dataclass(frozen=True)
class Encoded:
    """A batch of token ids and its attention mask, both int64 [batch, length]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


def pad_token(tokenizer: Tokenizer) -> tuple[str, int]:
    """The tokenizer's pad token and id: the first of PAD_CANDIDATES in its vocabulary."""
    for token in PAD_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token, int(token_id)
    raise InvalidArgument(f"tokenizer: has no pad token (one of {', '.join(PAD_CANDIDATES)})")


def parse(data: bytes | str) -> Tokenizer:
    """A tokenizer from tokenizer.json content, as it is (no pad token needed, nothing set).

    Raises InvalidArgument when the content is too large or not a tokenizer.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_TOKENIZER_BYTES:
        raise InvalidArgument(f"tokenizer: {len(raw)} bytes, more than the {MAX_TOKENIZER_BYTES} allowed")
    try:
        return Tokenizer.from_str(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument("tokenizer: not UTF-8") from None
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a plain Exception for bad JSON
        raise InvalidArgument(f"tokenizer: not a tokenizers tokenizer.json ({str(exc)[:200]})") from None


def load(data: bytes | str, max_length: int) -> Tokenizer:
    """A tokenizer from tokenizer.json content, set to truncate at max_length and pad to the longest.

    Raises InvalidArgument when the content is too large, not a tokenizer, or has no pad token.
    """
    if not 2 <= max_length <= MAX_LENGTH_LIMIT:
        raise InvalidArgument(f"text.max_length: must be an integer in [2, {MAX_LENGTH_LIMIT}]")
    tokenizer = parse(data)
    token, token_id = pad_token(tokenizer)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=token_id, pad_token=token)
    return tokenizer


def encode_batch(tokenizer: Tokenizer, texts: list[str]) -> Encoded:
    """input_ids and attention_mask for `texts`, with the truncation and padding `load` set."""
    if not texts:
        raise InvalidArgument("text: at least one string is needed")
    encodings = tokenizer.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    if ids.shape[1] == 0:
        raise InvalidArgument("text: every string is empty after tokenization")
    return Encoded(ids, mask)
