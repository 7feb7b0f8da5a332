"""Transformer text classifiers as torch modules: built from arguments, loaded from safetensors.

The arguments and the weight table live in `maas.common.text_architectures`
(no torch); this module turns them into `transformers` modules. Each family
has one explicit config class and one explicit `...ForSequenceClassification`
class: no Auto* class, no `from_pretrained`, no hub, no remote code — the
config is built from checked arguments, never read into transformers from a
file. `TextClassifier` wraps the model so that its forward takes
`(input_ids, attention_mask)` and returns the logits: what the trainer
trains, the inference service serves and the ONNX export traces.

The stored weights are the plain transformers model's `state_dict()`
(`state_dict` here), the layout `text_architectures.expected_tensors`
describes. A pretrained checkpoint's base weights are loaded by
`load_pretrained` with the safetensors library (no pickle, never
`torch.load`), the classification head kept new.

Needs torch, safetensors and transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from maas.common.errors import FailedPrecondition, some_of
from maas.common.text_architectures import EncoderArgs, config_dict, family_of

CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "bert": (BertConfig, BertForSequenceClassification),
    "distilbert": (DistilBertConfig, DistilBertForSequenceClassification),
    "roberta": (RobertaConfig, RobertaForSequenceClassification),
}
# The layers on top of the encoder: new for every data set, the only ones a pretrained checkpoint may lack.
HEAD_PREFIXES = {
    "bert": ("bert.pooler.", "classifier."),
    "distilbert": ("pre_classifier.", "classifier."),
    "roberta": ("classifier.",),
}
# Weights a checkpoint's own head or pre-training objective brings, never loaded into the new classifier.
FOREIGN_HEAD_PREFIXES = ("classifier.", "pre_classifier.", "cls.", "lm_head.", "vocab_", "qa_outputs.")
FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class TextClassifier(nn.Module):
    """(input_ids, attention_mask) -> logits [batch, num_classes]: what is trained, served and exported."""

    def __init__(self, family: str, args: EncoderArgs, model: PreTrainedModel) -> None:
        super().__init__()
        self.family = family
        self.args = args
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


def hf_config(family: str, args: EncoderArgs) -> PretrainedConfig:
    """The family's transformers config for `args` (PyTorch's scaled-dot-product attention)."""
    config_cls, _ = CLASSES[family_of(family)]
    config = config_cls(**config_dict(family, args))
    config._attn_implementation = "sdpa"
    return config


def build(family: str, args: EncoderArgs, seed: int = 0) -> TextClassifier:
    """A randomly initialized classifier; the same family, args and seed give the same weights.

    The global RNG is left as it was: the seed applies to this initialization only.
    """
    _, model_cls = CLASSES[family_of(family)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(hf_config(family, args))
    return TextClassifier(family, args, model.eval())


def state_dict(module: TextClassifier) -> dict[str, torch.Tensor]:
    """The weights to store: the transformers model's tensors, contiguous, on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()}


def load_weights(module: TextClassifier, state: Mapping[str, torch.Tensor]) -> None:
    """Load stored weights strictly (every tensor of `expected_tensors`, nothing else)."""
    module.model.load_state_dict(dict(state), strict=True)


# ------------------------------------------------------ pretrained checkpoints


@dataclass(frozen=True)
class LoadReport:
    """What loading a pretrained checkpoint did, for the job's log.

    new: the classifier's tensors the checkpoint did not have (only the head may be new);
    ignored: the checkpoint's tensors the classifier has no use for (its own head, pre-training
    heads, buffers such as position_ids).
    """

    loaded: int
    new: tuple[str, ...]
    ignored: tuple[str, ...]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as float32 (the format holds data only: no pickle is involved).

    Integer tensors (buffers such as position_ids) are kept as they are; any other dtype is refused.
    """
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                dtype = f.get_slice(name).get_dtype()
                tensor = f.get_tensor(name)
                if dtype in FLOAT_DTYPES:
                    tensor = tensor.to(torch.float32)
                elif not dtype.startswith(("I", "U")):
                    raise FailedPrecondition(f"pretrained weights: tensor '{name[:80]}' has dtype {dtype}")
                out[name] = tensor
    except FailedPrecondition:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise FailedPrecondition(f"pretrained weights: not a safetensors file ({str(exc)[:200]})") from None
    return out


def load_pretrained(module: TextClassifier, tensors: Mapping[str, torch.Tensor]) -> LoadReport:
    """Load a checkpoint's encoder weights into `module`, leaving its classification head as built.

    Names with or without the family's prefix ("bert.embeddings..." or
    "embeddings...", as a bare BertModel saves them) are accepted. A tensor of
    the encoder that is missing or of another shape is a FailedPrecondition
    naming it; the checkpoint's own head and pre-training heads are ignored.
    """
    family = module.family
    prefix = f"{family}."
    target = module.model.state_dict()
    heads = HEAD_PREFIXES[family]
    picked: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for stored, tensor in tensors.items():
        name = stored if stored.startswith(prefix) or stored.startswith(FOREIGN_HEAD_PREFIXES) else prefix + stored
        if name not in target or name.startswith(FOREIGN_HEAD_PREFIXES):
            ignored.append(stored)
            continue
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise FailedPrecondition(
                f"pretrained weights: '{stored[:80]}' has shape {list(tensor.shape)}, "
                f"the encoder needs {list(target[name].shape)}"
            )
        picked[name] = tensor
    missing = [name for name in target if name not in picked]
    lacking = [name for name in missing if not name.startswith(heads)]
    if lacking:
        raise FailedPrecondition(f"pretrained weights: the checkpoint lacks {some_of(lacking)}")
    result = module.model.load_state_dict(picked, strict=False)
    assert not result.unexpected_keys
    return LoadReport(len(picked), tuple(missing), tuple(sorted(ignored)))
