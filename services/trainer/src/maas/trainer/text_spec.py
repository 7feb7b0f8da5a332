"""The text fields of a job spec: a text encoder on a text data set, its tokenizer, a pretrained checkpoint.

A text job names a text encoder (bert, distilbert, roberta) and a text data
set (text, bbc_news); one without the other is refused. Its tokenizer is the
data set's arguments' (`dataset.args.tokenizer`, a tokenizer.json under the
data root, or one the job trains on its training split with
`dataset.args.vocab_size`), or the pretrained checkpoint's
(`pretrained_checkpoint.path`, a folder under the data root). The encoder's
vocabulary and pad id follow from the tokenizer, and a checkpoint's
config.json sets every size, so the spec may not give those itself. The
checkpoint is opened here, when the job is submitted: its files' sha256 (pinned
by the client or not) go into the resolved spec, and the worker reads only
files with those digests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.common import plugins, text_plugins, text_task
from maas.common.errors import FailedPrecondition, InvalidArgument, MaasError
from maas.trainer import builtin_text_datasets, text_data, text_pretrained
from maas.trainer.datasets import DatasetInfo
from maas.trainer.jobspec import Checkpoint, CheckpointRequest, JobRequest, TextSection

FIELD = "pretrained_checkpoint"
# What a tokenizer or a checkpoint's config.json decides, never the spec.
FROM_TOKENIZER = ("vocab_size", "pad_token_id")
# What a spec may still set on a pretrained encoder.
TUNABLE = ("num_classes", "dropout", "attention_dropout")
MAX_POSITIONS_DEFAULT = 512


def _renamed(exc: MaasError) -> MaasError:
    """text_pretrained's refusal, naming the spec's field (pretrained_checkpoint.*) instead of its own."""
    return type(exc)(exc.message.replace(f"{text_pretrained.FIELD}.", f"{FIELD}.", 1))


def open_checkpoint(
    data_root: Path, given: CheckpointRequest | Checkpoint, num_classes: int
) -> text_pretrained.Checkpoint:
    """The checkpoint folder a request names (its pins, if any), or a resolved spec's (every file pinned)."""
    path = given.path.rstrip("/")
    if not path:
        raise InvalidArgument(f"{FIELD}.path: a folder under the data root")
    try:
        return text_pretrained.open_checkpoint(data_root, path, num_classes, dict(given.sha256))
    except MaasError as exc:
        raise _renamed(exc) from None


def resolve(
    arch: plugins.Entry,
    info: DatasetInfo,
    args: dict[str, Any],
    request: JobRequest,
    data_root: Path,
) -> tuple[dict[str, Any], TextSection | None]:
    """(model args, the spec's `text` section) for a text job; (args, None) for any other job.

    `args` are the model's arguments as the spec and the data set's defaults give them.
    """
    encoder = text_plugins.is_text(arch.plugin)
    dataset = plugins.installed().get("dataset", info.name)
    texts = dataset is not None and builtin_text_datasets.is_text(dataset.plugin)
    asked = request.pretrained_checkpoint
    given_args = request.model.args
    if texts and not encoder:
        raise InvalidArgument(
            f"model.name: data set '{info.name}' holds texts; a text encoder reads it (bert, distilbert, roberta)"
        )
    if encoder and not texts:
        raise InvalidArgument(f"dataset.name: '{arch.name}' reads texts: a text data set (text, bbc_news)")
    if encoder and request.pretrained is not None and request.pretrained.path:
        raise InvalidArgument(f"pretrained: a text encoder starts from {FIELD} (a checkpoint folder)")
    if not encoder:
        if asked is not None:
            raise InvalidArgument(f"{FIELD}: only a text encoder starts from a pretrained checkpoint")
        return args, None
    max_length = int(info.input_shape[0])
    positions = args.get("max_positions")
    if isinstance(positions, int | float) and asked is None and max_length > positions:
        raise InvalidArgument(f"dataset.args.max_length: {max_length} is more than model.args.max_positions")
    tokenizer = str(info.args.get("tokenizer") or "")
    checkpoint: Checkpoint | None = None
    if asked is not None:
        extra = sorted(set(args) - set(TUNABLE))
        given = [key for key in extra if key in given_args]
        if given:
            raise InvalidArgument(f"model.args.{given[0]}: set by the pretrained checkpoint's config.json")
        opened = open_checkpoint(data_root, asked, info.num_classes)
        if opened.family != arch.name:
            raise InvalidArgument(f"model.name: the pretrained checkpoint is a {opened.family} encoder")
        if opened.tokenizer_json is None and not tokenizer:
            raise FailedPrecondition(
                f"{FIELD}.path: the checkpoint has no tokenizer.json (give its tokenizer as dataset.args.tokenizer)"
            )
        if opened.tokenizer_json is not None and tokenizer:
            raise InvalidArgument("dataset.args.tokenizer: the pretrained checkpoint brings its own tokenizer.json")
        tokenizer_json = opened.tokenizer_json or text_data.read_tokenizer(data_root, tokenizer)
        fit_pretrained(opened, tokenizer_json)
        args = {**opened.args.model_dump(), **{k: v for k, v in args.items() if k in TUNABLE}}
        checkpoint = Checkpoint(path=asked.path.rstrip("/"), sha256=opened.sha256)
    else:
        for key in FROM_TOKENIZER:
            if key in given_args:
                raise InvalidArgument(f"model.args.{key}: set by the tokenizer (dataset.args)")
        if tokenizer:
            fit = text_data.encoder_fit(text_data.read_tokenizer(data_root, tokenizer))
        else:  # trained by the job: at most vocab_size tokens, [PAD] first (the worker sets what it trained)
            fit = {"vocab_size": int(info.args["vocab_size"]), "pad_token_id": 0}
        args = {**args, **fit}
        if "max_positions" not in args:
            args["max_positions"] = max(MAX_POSITIONS_DEFAULT, max_length)
    return args, TextSection(max_length=max_length, pretrained_checkpoint=checkpoint)


def fit_pretrained(checkpoint: text_pretrained.Checkpoint, tokenizer_json: str) -> None:
    """The tokenizer must feed the pretrained encoder: its ids inside the vocabulary, the same pad id."""
    fit = text_data.encoder_fit(tokenizer_json)
    if fit["vocab_size"] > checkpoint.args.vocab_size:
        raise FailedPrecondition(
            f"{FIELD}: the tokenizer has {fit['vocab_size']} tokens (a pad token added where it had none), "
            f"the encoder's vocabulary {checkpoint.args.vocab_size}"
        )
    if fit["pad_token_id"] != checkpoint.args.pad_token_id:
        raise FailedPrecondition(
            f"{FIELD}: the tokenizer's pad id is {fit['pad_token_id']}, config.json's pad_token_id "
            f"{checkpoint.args.pad_token_id}"
        )


def document(architecture: dict[str, Any], section: TextSection | None) -> dict[str, Any]:
    """The architecture document with a text model's task and max_length (what the inference service reads)."""
    if section is None:
        return architecture
    return {**architecture, **text_task.text_document(section.max_length)}
