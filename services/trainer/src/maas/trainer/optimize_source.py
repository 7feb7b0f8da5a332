"""The source version of an optimization, as the registry holds it, and what it was trained on."""

from __future__ import annotations

from typing import Any

from maas.common import errors
from maas.common.clients.registry import RegistryClient
from maas.common.structs import from_struct
from maas.trainer.optimize_spec import Source, dataset_from_run
from maas.v1 import registry_pb2 as rpb

FORMATS = {v: rpb.ModelFormat.Name(v).removeprefix("MODEL_FORMAT_").lower() for v in rpb.ModelFormat.values() if v}


def lineage_dataset(version: rpb.ModelVersion) -> dict[str, Any] | None:
    ds = version.lineage.dataset
    if not ds.name:
        return None
    return {
        "name": ds.name,
        "path": ds.path,
        "args": from_struct(ds.args, "lineage.dataset.args"),
        "validation_split": ds.validation_split,
        "seed": ds.seed,
        "fingerprint": ds.fingerprint,
    }


async def find(client: RegistryClient, ref: str) -> Source:
    """The version `ref` names (NotFound as the registry says), with its data set when known."""
    version = await client.resolve(ref)
    dataset, origin = lineage_dataset(version), "lineage"
    if dataset is None and version.run_id:
        # Versions registered before lineage was recorded: the trainer's run has the job's parameters.
        try:
            run = await client.get_run(version.run_id)
        except errors.NotFound:
            run = None
        if run is not None and run.job_id:
            dataset, origin = dataset_from_run(dict(run.params)), "run"
    return Source(
        model=version.model,
        version=int(version.version),
        ready=version.status == rpb.VERSION_STATUS_READY,
        status=rpb.VersionStatus.Name(version.status).removeprefix("VERSION_STATUS_"),
        archived=version.archived,
        formats=frozenset(FORMATS.get(a.format, "") for a in version.artifacts) | {FORMATS.get(version.format, "")},
        dataset=dataset,
        dataset_from=origin if dataset is not None else "",
        input_shape=tuple(int(d) for d in version.signature.inputs[0].shape[1:]) if version.signature.inputs else None,
    )
