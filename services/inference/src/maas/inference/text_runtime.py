"""Text models: strings in, the graph's logits out, tokenized server-side inside the dynamic batcher.

A text version (`maas.common.text_task`) is served with one input, `text`:
BYTES of shape [-1], one UTF-8 string per row. Validation decodes and bounds
the strings on the event loop; the batcher gathers the strings of the
requests it merges and calls `TextRuntime.prepare` once for the whole batch
on its executor thread: the version's own tokenizer (`maas.common.tokenization`,
truncation at the version's max_length, padding to the batch's longest text
with its attention mask) makes the graph's input_ids and attention_mask (and
zeros for token_type_ids), then `run` executes the graph.

Padding is masked out, so a text's logits do not depend on what it was
batched with beyond floating-point summation order: the stated tolerance is
1e-4 on logits (README); measured on the tests' BERT (logits of order 1) with
onnxruntime on one CPU thread, a text merged with others of very different
lengths got exactly its logits alone, while a padding left unmasked moves
them by 2.6. Unlike
images, texts are therefore stacked without the bit-for-bit batch-invariance
probe, and executions are never padded with zero rows (an empty string is not
a neutral row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from maas.common import errors, text_task, tokenization
from maas.inference import runtimes
from maas.inference.tensors import BYTES, Signature, TensorSpec

WARM_UP_WORD = "warm "


class TextRuntime:
    """A text classifier's graph behind its tokenizer."""

    def __init__(self, graph: runtimes.OnnxRuntime, graph_inputs: list[str], tokenizer: Tokenizer) -> None:
        self.graph = graph
        self.graph_inputs = graph_inputs
        self.tokenizer = tokenizer
        self.platform = graph.platform
        self.backend = graph.backend
        self.device = graph.device

    def prepare(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The batch's strings as the graph's inputs, tokenized at once (on the batcher's executor thread)."""
        encoded = tokenization.encode_batch(self.tokenizer, inputs[0].tolist())
        empty = np.flatnonzero(encoded.attention_mask.sum(axis=1) == 0)
        if empty.size:
            raise errors.InvalidArgument(f"input '{text_task.TEXT_INPUT}': element {int(empty[0])} has no tokens")
        by_name = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        return [by_name.get(name, np.zeros_like(encoded.input_ids)) for name in self.graph_inputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.graph.run(inputs)

    def close(self) -> None:
        self.graph.close()


def load(
    model: Path, tokenizer: Path, max_length: int, declared: Signature | None, options: runtimes.RuntimeOptions
) -> tuple[TextRuntime, Signature]:
    """The runtime and the served signature (`text` BYTES [-1] in, the graph's outputs out).

    Raises FailedPrecondition or InvalidArgument naming what does not fit (the
    manager reports either as why the version cannot be served).
    """
    if declared is not None and any(t.datatype == BYTES for t in declared.inputs):
        declared = None  # the served signature was declared; the graph's is read from the graph
    graph, found = runtimes.load_onnx(model, declared, options)
    try:
        found.check_servable()
    except ValueError as exc:
        raise errors.FailedPrecondition(str(exc)) from None
    names = text_task.check_graph(
        [(t.name, t.datatype, len(t.shape)) for t in found.inputs],
        [(t.name, t.datatype, len(t.shape)) for t in found.outputs],
    )
    runtime = TextRuntime(graph, names, tokenization.load(tokenizer.read_bytes(), max_length))
    signature = Signature((TensorSpec(text_task.TEXT_INPUT, BYTES, (-1,)),), found.outputs)
    return runtime, signature


def warm_up(runtime: TextRuntime, signature: Signature, max_length: int) -> None:
    """A short text and one cut at max_length, batched: the graph must take every length the tokenizer makes."""
    texts = np.array(["warm up", WARM_UP_WORD * (2 * max_length)], dtype=object)
    runtimes.check_outputs(signature, runtime.run(runtime.prepare([texts])), len(texts))
