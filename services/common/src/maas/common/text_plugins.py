"""The text encoders (bert, distilbert, roberta) as built-in architecture plugins, without torch.

maas-common registers each family under the `maas.architectures` entry point
group, as it registers LeNet or an operator's plugin: `maas catalog ls` lists
them with their arguments, a job names one as `model.name`, and the registry
checks a version's weights against the family's parameter table
(`text_architectures.expected_tensors`, no torch).

A text architecture document is the catalog's own (`name`, `args`, `labels`)
with `input_shape` [max_length] (tokens per text, at most) and, for serving,
`"task": "text_classification"` and `"text": {"max_length": N}`. Its inputs
are `input_ids` and `attention_mask` (INT64 [batch, sequence]); it is trained
on batches padded to their longest text and served from its ONNX export with
its tokenizer (`maas.common.tokenization`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict

from maas.common import text_architectures as ta
from maas.common.errors import InvalidArgument
from maas.common.plugins import ArchitectureArgs, ArchitecturePlugin, TensorNeed, TensorSpec

if TYPE_CHECKING:
    from torch import nn

_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True)


class BertPluginArgs(ta.BertArgs, ArchitectureArgs):
    """BERT's arguments as a catalog entry's (num_classes at least 2, filled in from the data set)."""

    model_config = _CONFIG


class DistilBertPluginArgs(ta.DistilBertArgs, ArchitectureArgs):
    model_config = _CONFIG


class RobertaPluginArgs(ta.RobertaArgs, ArchitectureArgs):
    model_config = _CONFIG


TOKENS = (
    TensorSpec("input_ids", "INT64", (-1,), "token ids of each text, padded to the longest"),
    TensorSpec("attention_mask", "INT64", (-1,), "1 on tokens, 0 on padding"),
)


class TextEncoder(ArchitecturePlugin[Any]):
    """A transformers encoder of one family with a classification head, trained on a text data set."""

    inputs = TOKENS
    normalize = False

    def __init__(self, family: ta.Family, args: type[ArchitectureArgs], description: str) -> None:
        self.name = family
        self.family: ta.Family = family
        self.Args = args
        self.description = description

    def check(self, args: Any, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 1:
            raise InvalidArgument(
                f"architecture.input_shape: {self.name} takes token sequences [max_length] (a text data set)"
            )
        ta.check_max_length(args, input_shape[0])
        count = ta.parameter_count(self.family, args)
        if count > ta.MAX_PARAMETERS:
            raise InvalidArgument(f"architecture.args: {count} parameters, more than the {ta.MAX_PARAMETERS} allowed")

    def signature_inputs(self, args: Any, input_shape: tuple[int, ...], input_name: str) -> tuple[TensorSpec, ...]:
        return TOKENS

    def build(self, args: Any, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """The transformers `...ForSequenceClassification` model: its state_dict is what a version stores.

        Initialized from torch's global generator's seed (the job seeds it before building).
        """
        import torch

        from maas.common import text_models

        return text_models.build(self.family, args, seed=torch.initial_seed() % 2**31).model

    def parameters(self, args: Any, num_classes: int, input_shape: tuple[int, ...]) -> dict[str, TensorNeed]:
        return ta.expected_tensors(self.family, args)


def is_text(plugin: object) -> bool:
    """True for a text encoder's plugin: one that takes input_ids and attention_mask."""
    return isinstance(plugin, TextEncoder)


# The entry points' objects (services/common/pyproject.toml names each).
bert = TextEncoder("bert", BertPluginArgs, "A BERT encoder (transformers) with a classification head, for text.")
distilbert = TextEncoder(
    "distilbert", DistilBertPluginArgs, "A DistilBERT encoder (transformers) with a classification head, for text."
)
roberta = TextEncoder(
    "roberta", RobertaPluginArgs, "A RoBERTa encoder (transformers) with a classification head, for text."
)
