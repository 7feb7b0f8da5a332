"""A text job's spec: what a pretrained checkpoint decides, and what is refused before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import save_file
from tokenizers import Tokenizer, models

from maas.common import text_architectures as ta
from maas.common import text_models as tm
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.trainer import spec

WORDS = [f"w{i}" for i in range(14)]


def _checkpoint(root: Path, *, pad: bool) -> None:
    """A 1-layer BERT of 16 tokens under root/tiny; its tokenizer has [PAD] or not."""
    folder = root / "tiny"
    folder.mkdir()
    config = {
        "model_type": "bert",
        "num_hidden_layers": 1,
        "hidden_size": 16,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "vocab_size": 16,
        "max_position_embeddings": 32,
    }
    (folder / "config.json").write_text(json.dumps(config))
    family, args = ta.args_from_config(config, num_classes=2)
    save_file(tm.state_dict(tm.build(family, args)), str(folder / "model.safetensors"))
    vocab = {"[PAD]" if pad else "[CLS]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    (folder / "tokenizer.json").write_text(Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).to_str())
    rows = [json.dumps({"text": f"w{i % 14} w{(i + 3) % 14}", "label": "ab"[i % 2]}) for i in range(40)]
    (root / "rows.jsonl").write_text("\n".join(rows) + "\n")


def _resolve(root: Path, **model_args: Any) -> dict[str, Any]:
    raw = {
        "model": {"name": "bert", "args": model_args},
        "dataset": {"name": "text", "path": "rows.jsonl", "args": {"max_length": 16}},
        "pretrained_checkpoint": {"path": "tiny/"},
    }
    return spec.resolve(raw, data_root=root, max_world_size=1, max_runtime=60)


def test_the_checkpoint_sets_the_sizes_and_every_file_is_pinned(tmp_path: Path) -> None:
    _checkpoint(tmp_path, pad=True)
    resolved = _resolve(tmp_path, dropout=0.0)
    assert resolved.architecture is not None and resolved.text is not None
    args = resolved.architecture.args
    assert (args["num_layers"], args["hidden_size"], args["vocab_size"], args["num_classes"]) == (1, 16, 16, 2)
    assert args["dropout"] == 0.0
    assert resolved.text.pretrained_checkpoint is not None
    pins = resolved.text.pretrained_checkpoint.sha256
    assert set(pins) == {"config.json", "model.safetensors", "tokenizer.json"}


def test_a_checkpoint_tokenizer_without_a_pad_token_is_refused(tmp_path: Path) -> None:
    _checkpoint(tmp_path, pad=False)
    with pytest.raises(FailedPrecondition, match=r"pretrained_checkpoint: the tokenizer has 17 tokens"):
        _resolve(tmp_path)


def test_sizes_the_checkpoint_decides_cannot_be_given(tmp_path: Path) -> None:
    _checkpoint(tmp_path, pad=True)
    with pytest.raises(InvalidArgument, match=r"model\.args\.num_layers: set by the pretrained checkpoint"):
        _resolve(tmp_path, num_layers=4)
