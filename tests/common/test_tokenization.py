"""maas.common.tokenization: what the trainer and the inference service both feed a text model."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from maas.common import tokenization
from maas.common.errors import InvalidArgument

CORPUS = [
    "the service answered every request quickly",
    "a slow and broken release made users angry",
    "great model, fast answers and clear errors",
    "terrible latency and the worker crashed again",
] * 5


def _tokenizer_json(pad: str | None = "[PAD]") -> str:
    specials = ["[UNK]", "[CLS]", "[SEP]"] + ([pad] if pad else [])
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok.to_str()


def test_batch_is_padded_to_its_longest_text_with_a_mask() -> None:
    tok = tokenization.load(_tokenizer_json(), max_length=64)
    out = tokenization.encode_batch(tok, ["fast answers", "the worker crashed again and again and again"])
    assert out.input_ids.dtype == np.int64 and out.attention_mask.dtype == np.int64
    assert out.input_ids.shape == out.attention_mask.shape
    pad_id = tok.token_to_id("[PAD]")
    short = out.attention_mask[0]
    assert short.sum() == 4  # [CLS] fast answers [SEP]
    assert (out.input_ids[0][short == 0] == pad_id).all()
    assert out.attention_mask[1].all()


def test_alone_and_batched_give_the_same_real_tokens() -> None:
    tok = tokenization.load(_tokenizer_json(), max_length=64)
    alone = tokenization.encode_batch(tok, ["clear errors"])
    batched = tokenization.encode_batch(tok, ["clear errors", "a slow and broken release made users angry"])
    n = int(alone.attention_mask[0].sum())
    assert (batched.input_ids[0][:n] == alone.input_ids[0]).all()


def test_truncation_keeps_special_tokens_within_max_length() -> None:
    tok = tokenization.load(_tokenizer_json(), max_length=6)
    out = tokenization.encode_batch(tok, [" ".join(CORPUS)])
    assert out.input_ids.shape == (1, 6)
    assert out.input_ids[0][-1] == tok.token_to_id("[SEP]")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b'{"model": 3}', "not a tokenizers tokenizer.json"),
        (b"x" * (tokenization.MAX_TOKENIZER_BYTES + 1), "more than"),
    ],
)
def test_bad_tokenizer_content_is_invalid_argument(content: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        tokenization.load(content, max_length=16)


def test_a_tokenizer_without_a_pad_token_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="no pad token"):
        tokenization.load(_tokenizer_json(pad=None), max_length=16)


def test_max_length_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="max_length"):
        tokenization.load(_tokenizer_json(), max_length=1)


def test_parse_takes_a_tokenizer_without_a_pad_token_and_sets_nothing() -> None:
    tok = tokenization.parse(_tokenizer_json(pad=None).encode())
    assert tok.token_to_id("[PAD]") is None
    assert tok.truncation is None and tok.padding is None
    with pytest.raises(InvalidArgument):
        tokenization.parse("{}")
