"""Protobuf <-> domain conversions for the registry, as paired to_x / from_x."""

from __future__ import annotations

import functools
import json
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from maas.common import errors
from maas.common.structs import integral
from maas.registry import entities
from maas.v1 import common_pb2, registry_pb2

# --------------------------------------------------------------- scalars ---

# Known enum numbers, computed once (EnumTypeWrapper.values() builds a list per call).
_DATATYPES = frozenset(common_pb2.DataType.values())
_STATUSES = frozenset(registry_pb2.VersionStatus.values())
_FORMATS = frozenset(registry_pb2.ModelFormat.values())
_ORDERS = frozenset(registry_pb2.VersionOrder.values())
_RUN_STATUSES = frozenset(registry_pb2.RunStatus.values())
_EVENT_TYPES = frozenset(registry_pb2.EventType.values())


def to_timestamp(ms: int) -> timestamp_pb2.Timestamp | None:
    if not ms:
        return None
    return timestamp_pb2.Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


def _timestamp_fields(ms: int) -> dict[str, int] | None:
    """A Timestamp as message-constructor fields (cheaper than building the message first)."""
    return {"seconds": ms // 1000, "nanos": ms % 1000 * 1_000_000} if ms else None


def from_datatype(value: int) -> str:
    if value == common_pb2.DATA_TYPE_UNSPECIFIED or value not in _DATATYPES:
        raise errors.InvalidArgument("datatype: must be set to a known type")
    return common_pb2.DataType.Name(value).removeprefix("DATA_TYPE_")


def to_datatype(name: str) -> int:
    return common_pb2.DataType.Value(f"DATA_TYPE_{name}")


def from_status(value: int) -> entities.VersionStatus:
    if value == registry_pb2.VERSION_STATUS_UNSPECIFIED or value not in _STATUSES:
        raise errors.InvalidArgument("statuses: unknown version status")
    return entities.VersionStatus(registry_pb2.VersionStatus.Name(value).removeprefix("VERSION_STATUS_"))


_STATUS_NUMBERS = {s: registry_pb2.VersionStatus.Value(f"VERSION_STATUS_{s.value}") for s in entities.VersionStatus}


def to_status(status: entities.VersionStatus) -> int:
    return _STATUS_NUMBERS[status]


def from_format(value: int, *, required: bool = True) -> entities.ModelFormat | None:
    if value == registry_pb2.MODEL_FORMAT_UNSPECIFIED:
        if required:
            raise errors.InvalidArgument("format: must be set")
        return None
    if value not in _FORMATS:
        raise errors.InvalidArgument("format: unknown model format")
    return entities.ModelFormat(registry_pb2.ModelFormat.Name(value).removeprefix("MODEL_FORMAT_"))


_FORMAT_NUMBERS = {f: registry_pb2.ModelFormat.Value(f"MODEL_FORMAT_{f.value}") for f in entities.ModelFormat}


def to_format(fmt: entities.ModelFormat) -> int:
    return _FORMAT_NUMBERS[fmt]


def from_order(value: int) -> entities.VersionOrder:
    if value not in _ORDERS:
        raise errors.InvalidArgument("order: unknown order")
    return entities.VersionOrder(registry_pb2.VersionOrder.Name(value).removeprefix("VERSION_ORDER_"))


def from_run_status(value: int) -> entities.RunStatus:
    if value == registry_pb2.RUN_STATUS_UNSPECIFIED or value not in _RUN_STATUSES:
        raise errors.InvalidArgument("status: unknown run status")
    return entities.RunStatus(registry_pb2.RunStatus.Name(value).removeprefix("RUN_STATUS_"))


def to_run_status(status: entities.RunStatus) -> int:
    return registry_pb2.RunStatus.Value(f"RUN_STATUS_{status.value}")


def from_event_type(value: int) -> entities.EventType:
    if value == registry_pb2.EVENT_TYPE_UNSPECIFIED or value not in _EVENT_TYPES:
        raise errors.InvalidArgument("types: unknown event type")
    return entities.EventType(registry_pb2.EventType.Name(value).removeprefix("EVENT_TYPE_"))


_EVENT_TYPE_NUMBERS = {t: registry_pb2.EventType.Value(f"EVENT_TYPE_{t.value}") for t in entities.EventType}


def to_event_type(value: entities.EventType) -> int:
    return _EVENT_TYPE_NUMBERS[value]


def from_struct(value: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """Struct numbers are doubles; integral ones come back as ints (num_classes: 10)."""
    try:
        return json.loads(_struct_json(value.SerializeToString(deterministic=True)))
    except ValueError as exc:  # NaN and Infinity have no JSON form
        raise errors.InvalidArgument(f"{field}: numbers must be finite") from exc


@functools.lru_cache(maxsize=4096)
def _struct_json(raw: bytes) -> str:
    """MessageToDict walks in Python; clients send the same few architectures again and again."""
    doc = struct_pb2.Struct()
    doc.ParseFromString(raw)
    return json.dumps(integral(json_format.MessageToDict(doc)))


def to_struct(doc: str) -> struct_pb2.Struct:
    """A JSON object (as text) as a Struct. Shared: callers copy it into their message."""
    return _struct_of(doc)


@functools.lru_cache(maxsize=4096)
def _struct_of(doc: str) -> struct_pb2.Struct:
    """Struct.update is a Python-level walk; versions of a model share few architectures."""
    out = struct_pb2.Struct()
    out.update(json.loads(doc))
    return out


def from_tag_filters(values: Any) -> list[entities.TagFilter]:
    return [entities.TagFilter(f.key, f.value) for f in values]


# ------------------------------------------------------------- signature ---


def from_signature(sig: common_pb2.Signature) -> entities.Signature:
    return _signature_from_bytes(sig.SerializeToString(deterministic=True))


@functools.lru_cache(maxsize=4096)
def _signature_from_bytes(raw: bytes) -> entities.Signature:
    """Clients send the same few signatures again and again; the entity is immutable."""
    sig = common_pb2.Signature()
    sig.ParseFromString(raw)

    def specs(items: Any, side: str) -> tuple[entities.TensorSpec, ...]:
        out = []
        for spec in items:
            try:
                datatype = from_datatype(spec.datatype)
            except errors.InvalidArgument as exc:
                raise errors.InvalidArgument(f"signature.{side}[{spec.name}]: {exc.message}") from exc
            out.append(entities.TensorSpec(spec.name, datatype, tuple(spec.shape)))
        return tuple(out)

    return entities.Signature(specs(sig.inputs, "inputs"), specs(sig.outputs, "outputs"))


def to_signature(sig: entities.Signature) -> common_pb2.Signature:
    """Shared: callers copy it into their message."""
    return _signature_of(sig)


@functools.lru_cache(maxsize=4096)
def _signature_of(sig: entities.Signature) -> common_pb2.Signature:
    """Signatures are immutable and shared by many versions: build each once."""
    return _build_signature(sig)


def _build_signature(sig: entities.Signature) -> common_pb2.Signature:
    def specs(items: tuple[entities.TensorSpec, ...]) -> list[common_pb2.TensorSpec]:
        return [
            common_pb2.TensorSpec(name=s.name, datatype=to_datatype(s.datatype), shape=s.shape)  # type: ignore[arg-type]
            for s in items
        ]

    return common_pb2.Signature(inputs=specs(sig.inputs), outputs=specs(sig.outputs))


# --------------------------------------------------------------- objects ---


def to_model(model: entities.Model) -> registry_pb2.Model:
    out = registry_pb2.Model(
        name=model.name,
        description=model.description,
        latest_version=model.latest_version,
        created_at=_timestamp_fields(model.created_at_ms),  # type: ignore[arg-type]
        updated_at=_timestamp_fields(model.updated_at_ms),  # type: ignore[arg-type]
    )
    if model.tags:
        _fill(out.tags, model.tags)
    if model.aliases:
        _fill(out.aliases, model.aliases)
    return out


def from_create_version(req: registry_pb2.CreateVersionRequest) -> entities.NewVersion:
    fmt = from_format(req.format)
    assert fmt is not None
    return entities.NewVersion(
        model=req.model,
        format=fmt,
        architecture=from_struct(req.architecture, "architecture"),
        signature=from_signature(req.signature),
        run_id=req.run_id,
        description=req.description,
        tags=dict(req.tags),
        metrics=dict(req.metrics),
        lineage=from_lineage(req.lineage) if req.HasField("lineage") else None,
    )


def _fill(field: Any, values: dict[str, Any]) -> None:
    """Set a map field item by item (the constructor's map update walks in Python, slower)."""
    for key, value in values.items():
        field[key] = value


def to_version(v: entities.Version) -> registry_pb2.ModelVersion:
    # Lists build a hundred of these per call: shared sub-messages (copied in by
    # the constructor), enum numbers from dicts, timestamps as plain fields.
    out = registry_pb2.ModelVersion(
        model=v.model,
        version=v.version,
        status=_STATUS_NUMBERS[v.status],  # type: ignore[arg-type]
        status_reason=v.status_reason,
        format=_FORMAT_NUMBERS[v.format],  # type: ignore[arg-type]
        architecture=_struct_of(v.architecture_json),
        signature=_signature_of(v.signature),
        run_id=v.run_id,
        description=v.description,
        size_bytes=v.size_bytes,
        sha256=v.sha256,
        archived=v.archived,
        aliases=v.aliases,
        created_at=_timestamp_fields(v.created_at_ms),  # type: ignore[arg-type]
        ready_at=_timestamp_fields(v.ready_at_ms),  # type: ignore[arg-type]
        lineage=None if v.lineage is None else _lineage_of(v.lineage),
    )
    if v.tags:
        _fill(out.tags, v.tags)
    if v.metrics:
        _fill(out.metrics, v.metrics)
    if v.artifacts:
        out.artifacts.extend(to_artifact(a) for a in v.artifacts)
    return out


# --------------------------------------------------------------- lineage ---

_EMPTY_LINEAGE = registry_pb2.Lineage()
_EMPTY_DATASET = registry_pb2.DatasetLineage()


def from_lineage(msg: registry_pb2.Lineage) -> entities.Lineage | None:
    """None for an empty message; the data set's arguments as canonical JSON, software sorted by name."""
    if msg == _EMPTY_LINEAGE:
        return None
    dataset = None
    if msg.HasField("dataset") and msg.dataset != _EMPTY_DATASET:
        ds = msg.dataset
        dataset = entities.DatasetLineage(
            name=ds.name,
            args_json=json.dumps(from_struct(ds.args, "lineage.dataset.args"), sort_keys=True),
            path=ds.path,
            fingerprint=ds.fingerprint,
            validation_split=ds.validation_split,
            seed=ds.seed,
            origin=ds.origin,
        )
    parent = entities.VersionRef(msg.parent.model, msg.parent.version) if msg.HasField("parent") else None
    return entities.Lineage(
        source=msg.source,
        job_id=msg.job_id,
        parent=parent,
        dataset=dataset,
        method=msg.method,
        software=tuple(sorted(msg.software.items())),
        architecture_origin=msg.architecture_origin,
        pretrained_path=msg.pretrained.path,
        pretrained_sha256=msg.pretrained.sha256,
    )


def to_lineage(lineage: entities.Lineage) -> registry_pb2.Lineage:
    """Shared: callers copy it into their message."""
    return _lineage_of(lineage)


@functools.lru_cache(maxsize=4096)
def _lineage_of(lineage: entities.Lineage) -> registry_pb2.Lineage:
    """Lineages are immutable and read back once per stored text: versions of a list share few."""
    out = registry_pb2.Lineage(
        source=lineage.source,
        job_id=lineage.job_id,
        method=lineage.method,
        architecture_origin=lineage.architecture_origin,
    )
    if lineage.pretrained_path:
        out.pretrained.CopyFrom(
            registry_pb2.PretrainedLineage(path=lineage.pretrained_path, sha256=lineage.pretrained_sha256)
        )
    if lineage.parent is not None:
        out.parent.model = lineage.parent.model
        out.parent.version = lineage.parent.version
    if lineage.dataset is not None:
        ds = lineage.dataset
        out.dataset.CopyFrom(
            registry_pb2.DatasetLineage(
                name=ds.name,
                args=_struct_of(ds.args_json),
                path=ds.path,
                fingerprint=ds.fingerprint,
                validation_split=ds.validation_split,
                seed=ds.seed,
                origin=ds.origin,
            )
        )
    _fill(out.software, dict(lineage.software))
    return out


def to_artifact(a: entities.Artifact) -> registry_pb2.Artifact:
    return registry_pb2.Artifact(
        format=_FORMAT_NUMBERS[a.format],  # type: ignore[arg-type]
        size_bytes=a.size_bytes,
        sha256=a.sha256,
        created_at=_timestamp_fields(a.created_at_ms),  # type: ignore[arg-type]
    )


def to_alias(a: entities.Alias) -> registry_pb2.Alias:
    return registry_pb2.Alias(
        model=a.model,
        alias=a.alias,
        version=a.version,
        previous_version=a.previous_version,
        updated_at=to_timestamp(a.updated_at_ms),
    )


def to_run(r: entities.Run) -> registry_pb2.Run:
    return registry_pb2.Run(
        run_id=r.run_id,
        name=r.name,
        job_id=r.job_id,
        status=to_run_status(r.status),  # type: ignore[arg-type]
        params=r.params,
        metrics=r.metrics,
        started_at=to_timestamp(r.started_at_ms),
        finished_at=to_timestamp(r.finished_at_ms),
    )


def from_series(values: Any) -> list[entities.MetricSeries]:
    return [entities.MetricSeries(s.key, list(s.steps), list(s.values), list(s.timestamps_ms)) for s in values]


def to_series(s: entities.MetricSeries) -> registry_pb2.MetricSeries:
    return registry_pb2.MetricSeries(key=s.key, steps=s.steps, values=s.values, timestamps_ms=s.timestamps_ms)


def to_event(e: entities.Event) -> registry_pb2.Event:
    return registry_pb2.Event(
        id=e.id,
        type=to_event_type(e.type),  # type: ignore[arg-type]
        model=e.model,
        version=e.version,
        alias=e.alias,
        previous_version=e.previous_version,
        created_at=to_timestamp(e.created_at_ms),
        deployment=e.deployment,
        generation=e.generation,
    )


def to_artifact_info(info: entities.ArtifactInfo) -> registry_pb2.ArtifactInfo:
    return registry_pb2.ArtifactInfo(
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        format=to_format(info.format),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------- deployments ---

_TARGET_STATES = frozenset(registry_pb2.TargetState.values())
_TARGET_STATE_NUMBERS = {s: registry_pb2.TargetState.Value(f"TARGET_STATE_{s.value}") for s in entities.TargetState}


def from_target_state(value: int, field: str) -> entities.TargetState:
    if value == registry_pb2.TARGET_STATE_UNSPECIFIED or value not in _TARGET_STATES:
        raise errors.InvalidArgument(f"{field}: must be set to a known target state")
    return entities.TargetState(registry_pb2.TargetState.Name(value).removeprefix("TARGET_STATE_"))


def from_deployment_spec(msg: registry_pb2.DeploymentSpec) -> entities.DeploymentSpec:
    o = msg.options
    if o.format != registry_pb2.MODEL_FORMAT_UNSPECIFIED and o.format not in _FORMATS:
        raise errors.InvalidArgument("spec.options.format: unknown model format")
    return entities.DeploymentSpec(
        targets=tuple(entities.DeploymentTarget(t.ref, t.weight) for t in msg.targets),
        shadow=entities.ShadowTarget(msg.shadow.ref, msg.shadow.sample_percent) if msg.HasField("shadow") else None,
        options=entities.ServingOptions(
            max_batch_size=o.max_batch_size,
            max_queue_delay_us=o.max_queue_delay_us if o.HasField("max_queue_delay_us") else None,
            instances=o.instances,
            device=o.device,
            format=from_format(o.format, required=False),
            preferred_batch_sizes=tuple(o.preferred_batch_sizes),
            max_queue_size=o.max_queue_size,
        ),
    )


def to_deployment_spec(spec: entities.DeploymentSpec) -> registry_pb2.DeploymentSpec:
    o = spec.options
    out = registry_pb2.DeploymentSpec(
        targets=[registry_pb2.DeploymentTarget(ref=t.ref, weight=t.weight) for t in spec.targets],
        options=registry_pb2.ServingOptions(
            max_batch_size=o.max_batch_size,
            max_queue_delay_us=o.max_queue_delay_us,
            instances=o.instances,
            device=o.device,
            format=registry_pb2.MODEL_FORMAT_UNSPECIFIED if o.format is None else to_format(o.format),  # type: ignore[arg-type]
            preferred_batch_sizes=o.preferred_batch_sizes,
            max_queue_size=o.max_queue_size,
        ),
    )
    if spec.shadow is not None:
        out.shadow.ref = spec.shadow.ref
        out.shadow.sample_percent = spec.shadow.sample_percent
    return out


def from_replica_status(msg: registry_pb2.ReplicaStatus) -> entities.ReplicaStatus:
    return entities.ReplicaStatus(
        replica=msg.replica,
        generation=msg.generation,
        targets=tuple(
            entities.TargetStatus(
                ref=t.ref,
                version=t.version,
                state=from_target_state(t.state, f"status.targets[{i}].state"),
                reason=t.reason,
                shadow=t.shadow,
            )
            for i, t in enumerate(msg.targets)
        ),
    )


def to_replica_status(r: entities.ReplicaStatus) -> registry_pb2.ReplicaStatus:
    return registry_pb2.ReplicaStatus(
        replica=r.replica,
        generation=r.generation,
        targets=[
            registry_pb2.TargetStatus(
                ref=t.ref,
                version=t.version,
                state=_TARGET_STATE_NUMBERS[t.state],  # type: ignore[arg-type]
                reason=t.reason,
                shadow=t.shadow,
            )
            for t in r.targets
        ],
        reported_at=to_timestamp(r.reported_at_ms),
    )


def to_deployment(d: entities.Deployment) -> registry_pb2.Deployment:
    return registry_pb2.Deployment(
        name=d.name,
        spec=to_deployment_spec(d.spec),
        generation=d.generation,
        created_at=to_timestamp(d.created_at_ms),
        updated_at=to_timestamp(d.updated_at_ms),
        replicas=[to_replica_status(r) for r in d.replicas],
    )
