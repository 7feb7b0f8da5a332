"""What makes a version a text model, read the same way by the registry, the client and the inference service.

A text classifier version carries `"task": "text_classification"` and
`"text": {"max_length": N}` in its architecture document (and usually its
`labels`), a TOKENIZER artifact (the tokenizers library's tokenizer.json),
and a model whose graph takes token ids: `input_ids` and `attention_mask`
(int64 [batch, sequence]), optionally `token_type_ids` (fed zeros), and
returns `logits` (float32 [batch, classes]). The inference service serves it
with one BYTES input, `text`, and tokenizes server-side
(`maas.common.tokenization`).

No torch, no tokenizers: the registry checks documents and graphs with this
alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from maas.common.errors import InvalidArgument

TEXT_CLASSIFICATION = "text_classification"
# The same bound as maas.common.tokenization.MAX_LENGTH_LIMIT (which needs tokenizers to import).
MAX_LENGTH_LIMIT = 8192
REQUIRED_INPUTS = ("input_ids", "attention_mask")
OPTIONAL_INPUTS = ("token_type_ids",)
LOGITS = "logits"
TEXT_INPUT = "text"
"""The one input a text model is served with: BYTES [-1], one UTF-8 string per row."""


def max_length_of(architecture: Mapping[str, Any]) -> int | None:
    """A text model's `text.max_length`; None when the document is not a text model's.

    InvalidArgument names the field when the document says text_classification but the rest is wrong.
    """
    if architecture.get("task") != TEXT_CLASSIFICATION:
        return None
    text = architecture.get("text")
    if not isinstance(text, Mapping):
        raise InvalidArgument('architecture.text: a text_classification model needs {"max_length": N}')
    value = text.get("max_length")
    if isinstance(value, float) and value.is_integer():  # a protobuf Struct holds every number as a double
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_LENGTH_LIMIT:
        raise InvalidArgument(f"architecture.text.max_length: must be an integer in [2, {MAX_LENGTH_LIMIT}]")
    return value


def text_document(max_length: int, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The architecture document of a text classifier (checked)."""
    doc: dict[str, Any] = {"task": TEXT_CLASSIFICATION, "text": {"max_length": max_length}}
    if labels is not None:
        doc["labels"] = [str(label) for label in labels]
    max_length_of(doc)
    return doc


def check_graph(inputs: Sequence[tuple[str, str, int]], outputs: Sequence[tuple[str, str, int]]) -> list[str]:
    """The graph's input names in order, given (name, datatype, rank) of its inputs and outputs.

    InvalidArgument unless the inputs are input_ids and attention_mask (and
    optionally token_type_ids), each INT64 [batch, sequence], and an output
    `logits` is FP32 [batch, classes].
    """
    names = [name for name, _, _ in inputs]
    wanted = f"{' and '.join(REQUIRED_INPUTS)} (optionally {', '.join(OPTIONAL_INPUTS)}), INT64 [batch, sequence]"
    if any(n not in names for n in REQUIRED_INPUTS) or any(
        n not in (*REQUIRED_INPUTS, *OPTIONAL_INPUTS) for n in names
    ):
        shown = ", ".join(n[:64] for n in names[:8]) or "none"
        raise InvalidArgument(f"a text model's graph takes {wanted}; this one takes: {shown}")
    for name, datatype, rank in inputs:
        if datatype != "INT64" or rank != 2:
            raise InvalidArgument(f"input '{name}': {datatype} of rank {rank}; a text model's graph takes {wanted}")
    found = {name: (datatype, rank) for name, datatype, rank in outputs}
    if found.get(LOGITS) != ("FP32", 2):
        raise InvalidArgument(f"a text model's graph returns '{LOGITS}' FP32 [batch, classes]; this one does not")
    return names
