"""Resolve a job request into the job spec it runs: catalog lookups, the data set, every file pinned.

Nothing in a spec is executed: the model and data set are names looked up in
the installed catalog (entry-point plugins, the built-in ones among them),
their arguments are checked by each entry's pydantic model, every field by
the typed request (`maas.trainer.jobspec`), and the only paths a client may
give (a data set's file or folder, pretrained weights, a checkpoint folder)
must stay under the operator's data root. The result is a frozen `JobSpec`,
stored with the job and handed to the worker and the hand-off.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from maas.common import architectures, plugins
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.trainer import datasets, text_spec
from maas.trainer.jobspec import (
    METRICS,
    Architecture,
    DatasetRef,
    JobRequest,
    JobSpec,
    ModelRef,
    PretrainedWeights,
    parse,
)
from maas.trainer.pretrained_weights import resolve as resolve_pretrained

__all__ = ["METRICS", "fingerprint", "resolve"]


def resolve(raw: dict[str, Any] | JobRequest, *, data_root: Path, max_world_size: int, max_runtime: int) -> JobSpec:
    """The resolved spec of a request: defaults filled in, everything validated."""
    request = raw if isinstance(raw, JobRequest) else parse(raw, max_world_size=max_world_size, max_runtime=max_runtime)
    dataset = request.dataset
    info = datasets.describe(dataset.name, dataset.path, dict(dataset.args), data_root)

    model_name = request.model.name
    entry = architectures.entry(model_name, "model.name", "model")
    implied = plugins.within(
        plugins.timeout(),
        f"the defaults of architecture {model_name} ({entry.origin.label})",
        lambda: entry.plugin.defaults(info.input_shape, info.num_classes),
    )
    if not isinstance(implied, dict):
        raise FailedPrecondition(f"architecture {model_name} ({entry.origin.label}): defaults() must return a dict")
    args = {"num_classes": info.num_classes, **implied, **request.model.args}
    if args.get("num_classes") != info.num_classes:
        raise InvalidArgument(f"model.args.num_classes: the data set has {info.num_classes} classes")
    args, text = text_spec.resolve(entry, info, args, request, data_root)
    architecture = {
        "name": model_name,
        "args": args,
        "input_shape": list(info.input_shape),
        "labels": list(info.labels),
    }
    # The entry's model checks every argument (named as the client gave them); parsing checks the document.
    architectures.resolve_args(entry, args, info.input_shape, "model.args")
    parsed = architectures.parse(architecture)
    given = request.pretrained.model_dump() if request.pretrained is not None else None
    pretrained = resolve_pretrained(given, request.freeze_backbone, parsed, data_root)
    fields = request.model_dump(
        exclude={"model", "dataset", "pretrained", "pretrained_checkpoint", "max_runtime_seconds"}
    )
    return JobSpec(
        **fields,
        model=ModelRef(name=model_name, args=args),
        dataset=DatasetRef(name=info.name, path=info.path, args=info.args),
        architecture=Architecture.model_validate(architecture),
        max_runtime_seconds=request.max_runtime_seconds or max_runtime,
        pretrained=PretrainedWeights.model_validate(pretrained) if pretrained else None,
        text=text,
    )


def fingerprint(resolved: JobSpec | dict[str, Any]) -> str:
    doc = resolved.stored() if isinstance(resolved, JobSpec) else resolved
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
