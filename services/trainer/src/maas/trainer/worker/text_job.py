"""The text half of a training job: texts to token batches, the encoder to train, and what the hand-off uploads.

The worker's loop trains every job the same way; a text job differs in its
rows and its network only. Its texts are read by the data set's plugin, split
as image rows are (`datasets.split`), and tokenized once: by a tokenizer the
job trains on the training split only (`text_data.train_tokenizer`), a
supplied tokenizer.json under the data root, or the pretrained checkpoint's.
Every text goes through `maas.common.tokenization` (truncation to max_length,
the tokenizer's pad token), as the inference service encodes what it serves;
a batch is cut to its longest text, so it is exactly what `encode_batch`
gives for those texts.

The encoder is the catalog entry's network (`catalog.network`) inside
`TextClassifier(input_ids, attention_mask)`, its vocabulary and pad id
set from the tokenizer, or a pretrained checkpoint's encoder loaded from
safetensors (the files must have the sha256 the spec recorded at submit)
with a new head. The export writes the plain transformers weights
(`model.safetensors`, checked by the registry against the family's table),
the ONNX graph (checked with onnxruntime against torch), and tokenizer.json,
with the architecture document `task: text_classification`, `text.max_length`
and the labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from maas.common import catalog, plugins, text_models, tokenization
from maas.common.errors import FailedPrecondition
from maas.common.plugins import DataSource
from maas.trainer import datasets, text_data, text_pretrained, text_spec
from maas.trainer.builtin_text_datasets import TextDataset
from maas.trainer.datasets import DatasetInfo
from maas.trainer.jobspec import JobSpec, TextSection
from maas.trainer.text_data import TokenizerArgs
from maas.trainer.worker import onnx_export, text_onnx
from maas.trainer.worker.reporter import Reporter

TOKENIZER_FILE = "tokenizer.json"
# Texts tokenized at a time when the job encodes its data set (bounds the padded intermediate arrays).
ENCODE_CHUNK = 4096


def is_text(info: DatasetInfo) -> bool:
    entry = plugins.installed().get("dataset", info.name)
    return entry is not None and isinstance(entry.plugin, TextDataset)


@dataclass
class TextRows:
    """Every text as token ids and mask padded to the longest text [N, L], with its class index."""

    ids: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    tokenizer_json: str
    max_length: int
    lengths: torch.Tensor

    def fetch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The rows `idx` as encode_batch pads them: to the longest of these texts."""
        longest = int(self.lengths[idx].max()) if len(idx) else 1
        ids = self.ids[idx, :longest].to(device, non_blocking=True)
        mask = self.mask[idx, :longest].to(device, non_blocking=True)
        return ids, mask


def load(
    spec: JobSpec, info: DatasetInfo, data_root: Path, seed: int, reporter: Reporter
) -> tuple[TextRows, torch.Tensor, torch.Tensor]:
    """(the tokenized rows, training indices, validation indices)."""
    entry = plugins.installed().get("dataset", info.name)
    assert entry is not None and isinstance(entry.plugin, TextDataset)
    plugin: TextDataset = entry.plugin
    resolved = plugins.validate(plugin.Args, info.args, "dataset.args", info.name, {})
    data = plugins.within(
        plugins.timeout(),
        f"reading data set {info.name}",
        lambda: plugin.read(resolved, DataSource(data_root, info.path)),
    )
    if data.labels != info.labels:
        raise FailedPrecondition(f"data set {info.name}: its labels changed since the job was submitted")
    train_idx, val_idx = datasets.split(len(data.texts), spec.validation_split, seed)
    section = _section(spec)
    max_length = section.max_length
    tok_args = TokenizerArgs(**{k: resolved.model_dump()[k] for k in TokenizerArgs.model_fields})
    checkpoint = section.pretrained_checkpoint
    if checkpoint is not None:
        opened = text_spec.open_checkpoint(data_root, checkpoint, info.num_classes)
        tokenizer_json = opened.tokenizer_json or text_data.read_tokenizer(data_root, tok_args.tokenizer)
        text_spec.fit_pretrained(opened, tokenizer_json)
    elif tok_args.tokenizer:
        tokenizer_json = text_data.read_tokenizer(data_root, tok_args.tokenizer)
    else:
        tokenizer_json = text_data.train_tokenizer([data.texts[i] for i in train_idx.tolist()], tok_args)
        reporter.log(
            f"trained a WordPiece tokenizer of {text_data.encoder_fit(tokenizer_json)['vocab_size']} tokens "
            f"on the {len(train_idx)} training texts"
        )
    rows = encode(data.texts, data.targets, tokenizer_json, max_length)
    return rows, train_idx, val_idx


def encode(texts: tuple[str, ...], targets: Any, tokenizer_json: str, max_length: int) -> TextRows:
    tok = tokenization.load(tokenizer_json, max_length)
    _, pad_id = tokenization.pad_token(tok)
    ids = torch.full((len(texts), max_length), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(texts), max_length), dtype=torch.int64)
    for start in range(0, len(texts), ENCODE_CHUNK):
        enc = tokenization.encode_batch(tok, list(texts[start : start + ENCODE_CHUNK]))
        width = enc.input_ids.shape[1]
        ids[start : start + len(enc.input_ids), :width] = torch.from_numpy(enc.input_ids)
        mask[start : start + len(enc.input_ids), :width] = torch.from_numpy(enc.attention_mask)
    lengths = mask.sum(1)
    longest = max(1, int(lengths.max()))
    y = torch.as_tensor(targets, dtype=torch.int64)
    return TextRows(
        ids[:, :longest].contiguous(), mask[:, :longest].contiguous(), y, tokenizer_json, max_length, lengths
    )


def _section(spec: JobSpec) -> TextSection:
    if spec.text is None:
        raise FailedPrecondition("a text job's spec has no text section")
    return spec.text


def architecture_document(spec: JobSpec, rows: TextRows) -> dict[str, Any]:
    """The spec's architecture with the vocabulary and pad id of the tokenizer the job ended up with."""
    assert spec.architecture is not None
    doc = spec.architecture.document()
    if _section(spec).pretrained_checkpoint is None:
        doc["args"] = {**doc["args"], **text_data.encoder_fit(rows.tokenizer_json)}
    return doc


def build(
    spec: JobSpec, arch: catalog.Architecture, data_root: Path, num_classes: int, reporter: Reporter
) -> text_models.TextClassifier:
    """The classifier to train: the catalog's encoder, its base weights from the checkpoint when there is one."""
    network = catalog.network(arch)  # the family's ...ForSequenceClassification (text_plugins)
    module = text_models.TextClassifier(arch.name, arch.resolved, network)  # type: ignore[arg-type]
    checkpoint = _section(spec).pretrained_checkpoint
    if checkpoint is not None:
        opened = text_spec.open_checkpoint(data_root, checkpoint, num_classes)
        report = text_models.load_pretrained(module, text_models.read_safetensors(opened.weights))
        reporter.log(
            f"loaded {report.loaded} tensors of the pretrained checkpoint {checkpoint.path}; "
            f"new: {', '.join(report.new) or 'none'}"
        )
    module.model.train()
    return module


def export(
    directory: Path,
    model: text_models.TextClassifier,
    rows: TextRows,
    val_idx: torch.Tensor,
    tolerance: float,
) -> onnx_export.OnnxResult:
    """model.safetensors, model.onnx (when it checks out) and tokenizer.json under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".model.safetensors.tmp"
    save_file(text_models.state_dict(model), str(tmp))
    os.replace(tmp, directory / "model.safetensors")
    (directory / TOKENIZER_FILE).write_text(rows.tokenizer_json, encoding="utf-8")
    idx = val_idx[: onnx_export.MAX_CHECK_ROWS]
    ids, mask = rows.fetch(idx, torch.device("cpu"))
    batch = tokenization.Encoded(ids.numpy(), mask.numpy())
    return text_onnx.export(model, batch, directory, tolerance)


def lineage(spec: JobSpec) -> dict[str, str] | None:
    """The pretrained weights a version started from (path under the data root, sha256), or None."""
    checkpoint = _section(spec).pretrained_checkpoint
    if checkpoint is None:
        return None
    weights = text_pretrained.WEIGHTS
    return {"path": f"{checkpoint.path}/{weights}", "sha256": checkpoint.sha256[weights]}
