"""A pretrained text encoder the operator placed under the data root, read as data.

A checkpoint is a folder with `config.json` and `model.safetensors` (and
usually `tokenizer.json`), the layout transformers and sentence-transformers
save. The folder is named relative to the data root (`datasets.safe_path`);
each file must be a regular file inside it, within its size bound, and, when
the job pins it, of the given sha256. The config is read as JSON and turned
into the same checked arguments a job gives (`text_architectures.args_from_config`:
remote code refused in any form); the weights are read with the safetensors
library, never with pickle or `torch.load`, into a classifier built from
those arguments, with a new head sized to the data set's classes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from maas.common import text_models
from maas.common.digest import sha256_file
from maas.common.errors import FailedPrecondition, InvalidArgument, some_of
from maas.common.text_architectures import EncoderArgs, Family, args_from_config
from maas.trainer.datasets import safe_path
from maas.trainer.text_data import with_pad_token

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
MAX_BYTES = {CONFIG: 1024 * 1024, WEIGHTS: 4 * 1024**3, TOKENIZER: 32 * 1024 * 1024}
SHA256 = re.compile(r"[0-9a-f]{64}")
FIELD = "pretrained"


@dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint folder: the encoder it describes and the files to read."""

    family: Family
    args: EncoderArgs
    weights: Path
    tokenizer_json: str | None
    sha256: dict[str, str]  # file name -> hex digest, for the version's lineage


def open_checkpoint(
    data_root: Path, relative: str, num_classes: int, pins: Mapping[str, str] | None = None
) -> Checkpoint:
    """Check the folder `relative` under the data root and read its config (and tokenizer).

    `pins` maps file names (config.json, model.safetensors, tokenizer.json) to
    the sha256 the job expects; a file that differs is a FailedPrecondition.
    """
    try:
        folder = safe_path(data_root, relative)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message.replace("dataset.path", f"{FIELD}.path", 1)) from None
    if not folder.is_dir():
        raise FailedPrecondition(f"{FIELD}.path: no folder '{relative[:200]}' under the data root")
    pins = dict(pins or {})
    unknown = set(pins) - set(MAX_BYTES)
    if unknown:
        raise InvalidArgument(f"{FIELD}.sha256: {some_of(unknown)} not among {', '.join(MAX_BYTES)}")
    for name, digest in pins.items():
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise InvalidArgument(f"{FIELD}.sha256.{name}: must be 64 lowercase hex digits")
    root = data_root.resolve()
    files = {name: _file(root, folder, name, required=name != TOKENIZER) for name in MAX_BYTES}
    digests = {name: sha256_file(path) for name, path in files.items() if path is not None}
    for name, digest in pins.items():
        if name not in digests:
            raise FailedPrecondition(f"{FIELD}.sha256.{name}: pinned, but the checkpoint has no {name}")
        if digests[name] != digest:
            raise FailedPrecondition(
                f"{FIELD}.sha256.{name}: the file's sha256 is {digests[name]}, the job pins {digest}"
            )
    config_path, weights = files[CONFIG], files[WEIGHTS]
    assert config_path is not None and weights is not None
    try:
        config = json.loads(config_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidArgument(f"{FIELD}: {CONFIG} is not UTF-8 JSON") from None
    family, args = args_from_config(config, num_classes, field=f"{FIELD}.{CONFIG}")
    tokenizer = files[TOKENIZER]
    tokenizer_json = with_pad_token(tokenizer.read_bytes()) if tokenizer is not None else None
    return Checkpoint(family, args, weights, tokenizer_json, digests)


def _file(root: Path, folder: Path, name: str, *, required: bool) -> Path | None:
    """folder/name when it is a regular file; a link is followed only while it stays under the data root."""
    path = folder / name
    if not path.exists():
        if required:
            raise FailedPrecondition(f"{FIELD}.path: the checkpoint has no {name}")
        return None
    path = path.resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise FailedPrecondition(f"{FIELD}.path: {name} must be a regular file under the data root")
    size = path.stat().st_size
    if size > MAX_BYTES[name]:
        raise FailedPrecondition(f"{FIELD}.path: {name} has {size} bytes, more than the {MAX_BYTES[name]} allowed")
    return path


def build(checkpoint: Checkpoint, seed: int = 0) -> tuple[text_models.TextClassifier, text_models.LoadReport]:
    """The classifier the checkpoint describes, its encoder loaded, its head new (initialized with `seed`)."""
    module = text_models.build(checkpoint.family, checkpoint.args, seed)
    report = text_models.load_pretrained(module, text_models.read_safetensors(checkpoint.weights))
    return module, report
