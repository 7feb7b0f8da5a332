"""A small real text classifier for the text-serving tests: a WordPiece tokenizer and a BERT, offline.

The tokenizer is trained here with `tokenizers` on a small corpus; the BERT
is built by `transformers` from a config (random weights, seeded) and
exported with torch.onnx (the TorchScript exporter, dynamo=False) as a graph
`(input_ids, attention_mask) -> logits` with dynamic batch and sequence axes,
the way a user exports one to push it. Nothing is downloaded.

Like `support`, this never imports maas.oip (tritonclient lives in the same
pytest process).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = ["negative", "positive"]
CORPUS = [
    "the film was wonderful and the acting was great",
    "a terrible plot, bad acting and a boring ending",
    "i loved every minute of this movie",
    "the worst film i have seen in years",
    "beautiful music, a moving story, brilliant actors",
    "dull, slow and far too long",
    "an excellent cast and a clever script",
    "i want those two hours of my life back",
    "naïve but charming: a café, a crêpe and a happy end",
    "not good at all, the sound was awful",
] * 10
# Very different lengths, to be merged into one batch.
TEXTS = [
    "great",
    "the film was wonderful and the acting was great " * 6,
    "bad acting",
    "a moving story with brilliant actors, beautiful music and a clever script, i loved it",
]
MAX_LENGTH = 48


def train_tokenizer() -> Any:
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP], [PAD] for padding) trained on CORPUS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    return tokenizer


def export_bert(path: Path, vocab_size: int, *, seed: int = 0, token_type_ids: bool = False) -> Path:
    """A 2-layer BERT classifier (random weights from `seed`) exported to ONNX at `path`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
        # Wider than BERT's 0.02, so that logits are of order 1 and a padding that leaked would show.
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    bert = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, *rest: Any) -> Any:
            types = rest[0] if rest else None
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types).logits

    names = ["input_ids", "attention_mask", *(["token_type_ids"] if token_type_ids else [])]
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(),
            example,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def onnx_logits(model: Path, tokenizer_json: str, texts: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """What onnxruntime computes here on the same tokenization as the service (each text in its own batch)."""
    import onnxruntime as ort

    from maas.common import tokenization

    tokenizer = tokenization.load(tokenizer_json, max_length)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    rows = []
    for text in texts:
        encoded = tokenization.encode_batch(tokenizer, [text])
        feed = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        feed = {n: feed.get(n, np.zeros_like(encoded.input_ids)) for n in names}
        rows.append(session.run(["logits"], feed)[0])
    return np.concatenate(rows)
