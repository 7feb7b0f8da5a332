"""Transformer text encoders as data: their arguments and the weights each one needs, without torch.

A text classifier is one of three families of `transformers` encoders —
`bert`, `distilbert`, `roberta` — sized by arguments (layers, hidden size,
heads, intermediate size, vocabulary, positions) with a classification head
of `num_classes`. The arguments are pydantic models with ranges, so a job
spec, a registry upload or a pretrained `config.json` is checked the same
way before anything is built; nothing here imports torch or transformers.

`expected_tensors(family, args)` is the `state_dict()` of the family's
`...ForSequenceClassification` module (names, shapes, dtypes) computed by
formula; a test compares it with the real modules for several sizes, so the
registry can refuse weights no runtime could load without importing torch.

A text model version's architecture document carries `"task":
"text_classification"` and `"text": {"max_length": N}`; its inputs are
`input_ids` and `attention_mask` (INT64 [batch, sequence]) and its output
`logits` (FP32 [batch, num_classes]).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from maas.common.errors import InvalidArgument
from maas.common.plugins import MAX_CLASSES, TensorNeed
from maas.common.text_task import LOGITS, REQUIRED_INPUTS, TEXT_CLASSIFICATION

TASK = TEXT_CLASSIFICATION
FAMILIES = ("bert", "distilbert", "roberta")
Family = Literal["bert", "distilbert", "roberta"]
INPUT_NAMES = REQUIRED_INPUTS
OUTPUT_NAME = LOGITS
MAX_VOCAB = 262_144
MAX_POSITIONS = 8192
# About 4 GB of float32 weights: past this a job or an upload is refused before anything is allocated.
MAX_PARAMETERS = 1_000_000_000


def _integral(value: Any) -> Any:
    """JSON (and protobuf Struct) numbers arrive as floats: 4.0 is the integer 4, 4.5 stays a float."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Count = Annotated[int, BeforeValidator(_integral)]


class EncoderArgs(BaseModel):
    """What every family is sized by. Strict: no strings or booleans for numbers, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    num_classes: Count = Field(ge=2, le=MAX_CLASSES, description="Classes of the head (the data set's).")
    vocab_size: Count = Field(8000, ge=16, le=MAX_VOCAB, description="Token embeddings (set from the tokenizer).")
    num_layers: Count = Field(2, ge=1, le=48, description="Transformer layers.")
    hidden_size: Count = Field(128, ge=8, le=8192, description="Width of every layer (a multiple of num_heads).")
    num_heads: Count = Field(2, ge=1, le=128, description="Attention heads per layer.")
    intermediate_size: Count = Field(512, ge=8, le=32768, description="Width of the feed-forward block.")
    max_positions: Count = Field(512, ge=8, le=MAX_POSITIONS, description="Position embeddings (>= max_length).")
    pad_token_id: Count = Field(0, ge=0, lt=MAX_VOCAB, description="Padding token id (set from the tokenizer).")
    dropout: float = Field(0.1, ge=0.0, le=0.9, description="Dropout of hidden states while training.")
    attention_dropout: float = Field(0.1, ge=0.0, le=0.9, description="Dropout of attention weights.")
    activation: Literal["gelu", "relu", "gelu_new", "silu"] = "gelu"
    layer_norm_eps: float = Field(1e-12, gt=0.0, le=1e-3, description="Layer-norm epsilon.")

    @model_validator(mode="after")
    def _consistent(self) -> EncoderArgs:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")
        return self


class BertArgs(EncoderArgs):
    type_vocab_size: Count = Field(2, ge=1, le=16, description="Token type (segment) embeddings.")


class DistilBertArgs(EncoderArgs):
    """DistilBERT has no token type embeddings; its head has a pre-classifier layer."""


class RobertaArgs(EncoderArgs):
    """RoBERTa numbers positions from pad_token_id + 1, so its position table has max_positions + pad + 1 rows."""

    type_vocab_size: Count = Field(1, ge=1, le=16, description="Token type (segment) embeddings.")
    pad_token_id: Count = Field(1, ge=0, lt=MAX_VOCAB, description="Padding token id (set from the tokenizer).")


ARGS: dict[str, type[EncoderArgs]] = {"bert": BertArgs, "distilbert": DistilBertArgs, "roberta": RobertaArgs}
TextArgs = BertArgs | DistilBertArgs | RobertaArgs


def family_of(name: object) -> Family:
    """`name` as a family, or InvalidArgument naming architecture.name."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise InvalidArgument(
            f"architecture.name: unknown text encoder '{str(name)[:40]}' (known: {', '.join(FAMILIES)})"
        )
    return name  # type: ignore[return-value]


def parse_args(
    family: str, raw: object, field: str = "architecture.args", names: dict[str, str] | None = None
) -> EncoderArgs:
    """The family's arguments from a JSON object, defaults filled in.

    InvalidArgument names the first bad field as `<field>.<name>`, where `names`
    may rename an argument (a pretrained config calls num_layers num_hidden_layers).
    """
    cls = ARGS[family_of(family)]
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{field}: must be an object")
    try:
        args = cls.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        where = (names or {}).get(where, where)
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidArgument(f"{field}{'.' + where if where else ''}: {message}") from None
    count = parameter_count(family, args)
    if count > MAX_PARAMETERS:
        raise InvalidArgument(f"{field}: {count} parameters, more than the {MAX_PARAMETERS} allowed")
    return args


def position_rows(family: str, args: EncoderArgs) -> int:
    """Rows of the position embedding table (`max_position_embeddings` of the transformers config)."""
    return args.max_positions + args.pad_token_id + 1 if family == "roberta" else args.max_positions


def check_max_length(args: EncoderArgs, max_length: int) -> None:
    """A tokenizer truncating at max_length must fit the encoder's positions."""
    if not 2 <= max_length <= args.max_positions:
        raise InvalidArgument(f"text.max_length: must be in [2, {args.max_positions}] (the encoder's max_positions)")


def signature(args: EncoderArgs) -> dict[str, Any]:
    """The served tensors: token ids and mask in, one logit per class out (-1: any size)."""
    return {
        "inputs": [{"name": name, "datatype": "INT64", "shape": [-1, -1]} for name in INPUT_NAMES],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, args.num_classes]}],
    }


# ------------------------------------------------ transformers configs, both ways

# Our argument -> the transformers config key, per family (the config classes name them differently).
_BERT_KEYS = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_positions": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "pad_token_id": "pad_token_id",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "activation": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
}
_DISTILBERT_KEYS = {
    "num_layers": "n_layers",
    "hidden_size": "dim",
    "num_heads": "n_heads",
    "intermediate_size": "hidden_dim",
    "vocab_size": "vocab_size",
    "max_positions": "max_position_embeddings",
    "pad_token_id": "pad_token_id",
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation": "activation",
}
CONFIG_KEYS: dict[str, dict[str, str]] = {"bert": _BERT_KEYS, "distilbert": _DISTILBERT_KEYS, "roberta": _BERT_KEYS}
# A pretrained config must state its size; the rest falls back to the family's defaults.
_SIZE_ARGS = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size", "max_positions")
# Keys that ask transformers to import code from the checkpoint (or from the hub): refused wherever they appear.
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines")
# Settings the built encoders do not follow: a config asking for them is refused, not silently changed.
_REQUIRED_VALUES: dict[str, dict[str, object]] = {
    "bert": {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False},
    "roberta": {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False},
    "distilbert": {"sinusoidal_pos_embds": False},
}


def config_dict(family: str, args: EncoderArgs) -> dict[str, Any]:
    """The keyword arguments of the family's transformers config class for `args`."""
    keys = CONFIG_KEYS[family_of(family)]
    values = args.model_dump()
    out: dict[str, Any] = {hf: values[ours] for ours, hf in keys.items() if ours in values}
    out["max_position_embeddings"] = position_rows(family, args)
    out["num_labels"] = args.num_classes
    return out


def args_from_config(config: object, num_classes: int, field: str = "pretrained.config") -> tuple[Family, EncoderArgs]:
    """A pretrained `config.json` (already parsed as JSON) as a family and its arguments, head sized to num_classes.

    The config is data: its model_type picks one of FAMILIES, its sizes become
    the same arguments a job would give (and are bounded the same way), and
    anything asking for remote code (auto_map, trust_remote_code, ...) or for
    behaviour the built encoders lack (relative positions, a decoder) is an
    InvalidArgument naming the key. Unknown keys are ignored: the encoder is
    built from the arguments, never from the config itself.
    """
    if not isinstance(config, dict):
        raise InvalidArgument(f"{field}: must be a JSON object")
    _refuse_remote_code(config, field)
    family = config.get("model_type")
    if not isinstance(family, str) or family not in FAMILIES:
        raise InvalidArgument(f"{field}.model_type: '{str(family)[:40]}' is not one of {', '.join(FAMILIES)}")
    for key, wanted in _REQUIRED_VALUES[family].items():
        if key in config and config[key] != wanted:
            raise InvalidArgument(f"{field}.{key}: only {wanted!r} is supported")
    keys = CONFIG_KEYS[family]
    raw: dict[str, Any] = {"num_classes": num_classes}
    for ours, hf in keys.items():
        if hf in config:
            raw[ours] = config[hf]
        elif ours in _SIZE_ARGS:
            raise InvalidArgument(f"{field}.{hf}: missing")
    if family == "roberta":
        rows, pad = raw["max_positions"], raw.get("pad_token_id", 1)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (rows, pad)):
            raw["max_positions"] = rows - pad - 1  # RoBERTa's table has pad + 1 rows before the first position
    return family, parse_args(family, raw, field, keys)  # type: ignore[return-value]


def _refuse_remote_code(value: object, field: str, depth: int = 0) -> None:
    if depth > 16:
        raise InvalidArgument(f"{field}: nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            if key in REMOTE_CODE_KEYS or "remote_code" in str(key):
                raise InvalidArgument(f"{field}.{str(key)[:40]}: remote code is never loaded")
            _refuse_remote_code(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _refuse_remote_code(item, field, depth + 1)


# ------------------------------------------------------------ the weights needed


def expected_tensors(family: str, args: EncoderArgs) -> dict[str, TensorNeed]:
    """Every tensor of the `<Family>ForSequenceClassification` state_dict, in its order (buffers are not stored)."""
    h, i = args.hidden_size, args.intermediate_size
    out: dict[str, TensorNeed] = {}
    if family == "distilbert":
        _embeddings(out, "distilbert.embeddings", args, position_rows(family, args), token_types=0)
        for n in range(args.num_layers):
            p = f"distilbert.transformer.layer.{n}"
            for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
                _linear(out, f"{p}.attention.{lin}", h, h)
            _norm(out, f"{p}.sa_layer_norm", h)
            _linear(out, f"{p}.ffn.lin1", h, i)
            _linear(out, f"{p}.ffn.lin2", i, h)
            _norm(out, f"{p}.output_layer_norm", h)
        _linear(out, "pre_classifier", h, h)
        _linear(out, "classifier", h, args.num_classes)
        return out
    base = family_of(family)
    types = args.type_vocab_size if isinstance(args, BertArgs | RobertaArgs) else 0
    if base == "roberta":
        # RobertaEmbeddings registers its position table after the LayerNorm.
        _embeddings(out, "roberta.embeddings", args, 0, types)
        out["roberta.embeddings.position_embeddings.weight"] = TensorNeed((position_rows(family, args), h))
    else:
        _embeddings(out, "bert.embeddings", args, position_rows(family, args), types)
    for n in range(args.num_layers):
        p = f"{base}.encoder.layer.{n}"
        for proj in ("query", "key", "value"):
            _linear(out, f"{p}.attention.self.{proj}", h, h)
        _linear(out, f"{p}.attention.output.dense", h, h)
        _norm(out, f"{p}.attention.output.LayerNorm", h)
        _linear(out, f"{p}.intermediate.dense", h, i)
        _linear(out, f"{p}.output.dense", i, h)
        _norm(out, f"{p}.output.LayerNorm", h)
    if base == "roberta":
        _linear(out, "classifier.dense", h, h)
        _linear(out, "classifier.out_proj", h, args.num_classes)
    else:
        _linear(out, "bert.pooler.dense", h, h)
        _linear(out, "classifier", h, args.num_classes)
    return out


def parameter_count(family: str, args: EncoderArgs) -> int:
    """How many numbers the weights hold (what MAX_PARAMETERS bounds)."""
    total = 0
    for need in expected_tensors(family, args).values():
        size = 1
        for d in need.shape:
            size *= d
        total += size
    return total


def _embeddings(out: dict[str, TensorNeed], prefix: str, args: EncoderArgs, positions: int, token_types: int) -> None:
    out[f"{prefix}.word_embeddings.weight"] = TensorNeed((args.vocab_size, args.hidden_size))
    if positions:
        out[f"{prefix}.position_embeddings.weight"] = TensorNeed((positions, args.hidden_size))
    if token_types:
        out[f"{prefix}.token_type_embeddings.weight"] = TensorNeed((token_types, args.hidden_size))
    _norm(out, f"{prefix}.LayerNorm", args.hidden_size)


def _linear(out: dict[str, TensorNeed], prefix: str, n_in: int, n_out: int) -> None:
    out[f"{prefix}.weight"] = TensorNeed((n_out, n_in))
    out[f"{prefix}.bias"] = TensorNeed((n_out,))


def _norm(out: dict[str, TensorNeed], prefix: str, width: int) -> None:
    out[f"{prefix}.weight"] = TensorNeed((width,))
    out[f"{prefix}.bias"] = TensorNeed((width,))
