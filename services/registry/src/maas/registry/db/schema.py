"""ORM rows of the registry (the tables' definition) and the metric point table.

Only runs are read and written through the ORM; models, versions, aliases
and events go through the prebuilt statements of `statements` and the row
readers of `reads`. Times are integer milliseconds since the epoch (portable, cheap to sort and
to convert). JSON documents (architecture, signature, lineage) are stored as text the
registry never interprets beyond validation.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from maas.registry import entities

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ModelRow(Base):
    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The counter CreateVersion increments under the row lock.
    last_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class ModelTagRow(Base):
    __tablename__ = "model_tags"

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index(None, "key", "value"),)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    job_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    status: Mapped[str] = mapped_column(String(16))
    started_at_ms: Mapped[int] = mapped_column(BigInteger)
    finished_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)

    params: Mapped[list[RunParamRow]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )
    latest: Mapped[list[LatestMetricRow]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )

    def to_entity(self) -> entities.Run:
        return entities.Run(
            run_id=self.run_id,
            name=self.name,
            job_id=self.job_id,
            status=entities.RunStatus(self.status),
            params={p.key: p.value for p in self.params},
            metrics={m.key: m.value for m in self.latest},
            started_at_ms=self.started_at_ms,
            finished_at_ms=self.finished_at_ms,
        )


class RunParamRow(Base):
    __tablename__ = "run_params"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LatestMetricRow(Base):
    """The newest point of each (run, key): one upsert per key per batch."""

    __tablename__ = "run_latest_metrics"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Double)


# Metric points: append-only and the hottest table, so a plain Core table
# read and written in bulk, column-wise: one row holds up to a few thousand
# points of one (run, key), sorted, packed as little-endian int64 (steps,
# timestamps) and float64 (values) arrays (see domain/metric_store.py).
metric_chunks = Table(
    "metric_chunks",
    Base.metadata,
    Column("id", Id, primary_key=True),
    Column("run_pk", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("points", Integer, nullable=False),
    Column("step_data", LargeBinary, nullable=False),
    Column("timestamp_data", LargeBinary, nullable=False),
    Column("value_data", LargeBinary, nullable=False),
    Index(None, "run_pk", "key", "first_step"),
)


class VersionRow(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str] = mapped_column(String(32))
    architecture_json: Mapped[str] = mapped_column(Text, default="{}")
    signature_json: Mapped[str] = mapped_column(Text, default="{}")
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    ready_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    # When an upload of this PENDING version last received bytes (0: never);
    # the registry fails a version idle past its setting (domain/abandoned.py).
    upload_seen_at_ms: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Where the version came from, as JSON text ("": none recorded; migration 0006).
    lineage_json: Mapped[str] = mapped_column(Text, server_default="")

    __table_args__ = (
        UniqueConstraint("model_id", "number"),
        Index(None, "model_id", "status", "number"),
        Index(None, "sha256"),
        # The abandonment sweep: the few PENDING versions, oldest first.
        Index(None, "status", "created_at_ms"),
    )


class VersionArtifactRow(Base):
    """Every stored file of a version, the primary one included (its copy in model_versions stays)."""

    __tablename__ = "version_artifacts"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    format: Mapped[str] = mapped_column(String(32), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)

    # Blobs are shared by content: a delete asks whether any artifact still holds one.
    __table_args__ = (Index(None, "sha256"),)


class VersionTagRow(Base):
    __tablename__ = "version_tags"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class VersionMetricRow(Base):
    __tablename__ = "version_metrics"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    # The version's model, repeated here so that one index walks "the versions
    # of a model ordered by a metric" without sorting them (migration 0002).
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))

    __table_args__ = (Index(None, "model_id", "key", "value"),)


class AliasRow(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    version_number: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class EventRow(Base):
    """The append-only event log. Ids come from `counters`, in commit order."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    alias: Mapped[str] = mapped_column(String(64), default="")
    previous_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    # Deployment events (migration 0007): the deployment and its generation after the change.
    deployment: Mapped[str] = mapped_column(String(128), server_default="")
    generation: Mapped[int] = mapped_column(BigInteger, server_default="0")


class DeploymentRow(Base):
    """A deployment: a served name and its generation; targets and replica reports are its children."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    # ServingOptions as JSON text (see options_to_json).
    options_json: Mapped[str] = mapped_column(Text)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class DeploymentTargetRow(Base):
    """A target of a deployment in spec order, or its shadow (`shadow`; `percent` is then the sampled share).

    The model is a column of its own so that the targets of a model can be found by index.
    """

    __tablename__ = "deployment_targets"

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(128), index=True)
    percent: Mapped[int] = mapped_column(Integer)
    shadow: Mapped[bool] = mapped_column(Boolean)


class DeploymentReplicaRow(Base):
    """The latest report of one inference replica on one deployment."""

    __tablename__ = "deployment_replicas"

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    replica: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    # The TargetStatus list as JSON text (see target_statuses_to_json).
    targets_json: Mapped[str] = mapped_column(Text)
    reported_at_ms: Mapped[int] = mapped_column(BigInteger)


class CounterRow(Base):
    """Named counters; the row lock on 'events' orders event ids by commit."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


def signature_to_json(signature: entities.Signature) -> str:
    def specs(items: tuple[entities.TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in items]

    return json.dumps({"inputs": specs(signature.inputs), "outputs": specs(signature.outputs)})


@functools.lru_cache(maxsize=4096)
def signature_from_json(text: str) -> entities.Signature:
    """Cached: the result is immutable, and versions of a model share few signatures."""
    doc = json.loads(text or "{}")

    def specs(items: list[dict[str, Any]]) -> tuple[entities.TensorSpec, ...]:
        return tuple(entities.TensorSpec(i["name"], i["datatype"], tuple(i["shape"])) for i in items)

    return entities.Signature(specs(doc.get("inputs", [])), specs(doc.get("outputs", [])))


def lineage_to_json(lineage: entities.Lineage | None) -> str:
    """Canonical JSON text of a lineage ("" for none), the dataset's arguments inlined as an object."""
    if lineage is None:
        return ""
    doc: dict[str, Any] = {"source": lineage.source, "job_id": lineage.job_id, "method": lineage.method}
    if lineage.parent is not None:
        doc["parent"] = {"model": lineage.parent.model, "version": lineage.parent.version}
    if lineage.dataset is not None:
        ds = lineage.dataset
        doc["dataset"] = {
            "name": ds.name,
            "args": json.loads(ds.args_json),
            "path": ds.path,
            "fingerprint": ds.fingerprint,
            "validation_split": ds.validation_split,
            "seed": ds.seed,
        }
        if ds.origin:  # recorded since plugins; older lineages keep their text
            doc["dataset"]["origin"] = ds.origin
    doc["software"] = dict(lineage.software)
    if lineage.architecture_origin:
        doc["architecture_origin"] = lineage.architecture_origin
    if lineage.pretrained_path:
        doc["pretrained"] = {"path": lineage.pretrained_path, "sha256": lineage.pretrained_sha256}
    return json.dumps(doc, sort_keys=True, allow_nan=False)


@functools.lru_cache(maxsize=4096)
def lineage_from_json(text: str) -> entities.Lineage | None:
    """Cached: the result is immutable, and versions of one job or tool share much of it."""
    if not text:
        return None
    doc = json.loads(text)
    parent = doc.get("parent")
    ds = doc.get("dataset")
    return entities.Lineage(
        source=doc.get("source", ""),
        job_id=doc.get("job_id", ""),
        parent=entities.VersionRef(parent["model"], int(parent["version"])) if parent else None,
        dataset=entities.DatasetLineage(
            name=ds["name"],
            args_json=json.dumps(ds.get("args") or {}, sort_keys=True),
            path=ds.get("path", ""),
            fingerprint=ds.get("fingerprint", ""),
            validation_split=float(ds.get("validation_split", 0.0)),
            seed=int(ds.get("seed", 0)),
            origin=ds.get("origin", ""),
        )
        if ds
        else None,
        method=doc.get("method", ""),
        software=tuple(sorted((doc.get("software") or {}).items())),
        architecture_origin=doc.get("architecture_origin", ""),
        pretrained_path=(doc.get("pretrained") or {}).get("path", ""),
        pretrained_sha256=(doc.get("pretrained") or {}).get("sha256", ""),
    )


def options_to_json(options: entities.ServingOptions) -> str:
    """Only the options set, so that a stored document names what the deployment overrides."""
    doc: dict[str, Any] = {}
    if options.max_batch_size:
        doc["max_batch_size"] = options.max_batch_size
    if options.max_queue_delay_us is not None:
        doc["max_queue_delay_us"] = options.max_queue_delay_us
    if options.instances:
        doc["instances"] = options.instances
    if options.device:
        doc["device"] = options.device
    if options.format is not None:
        doc["format"] = options.format.value
    if options.preferred_batch_sizes:
        doc["preferred_batch_sizes"] = list(options.preferred_batch_sizes)
    if options.max_queue_size:
        doc["max_queue_size"] = options.max_queue_size
    return json.dumps(doc, sort_keys=True)


def options_from_json(text: str) -> entities.ServingOptions:
    doc = json.loads(text or "{}")
    fmt = doc.get("format")
    return entities.ServingOptions(
        max_batch_size=int(doc.get("max_batch_size", 0)),
        max_queue_delay_us=None if doc.get("max_queue_delay_us") is None else int(doc["max_queue_delay_us"]),
        instances=int(doc.get("instances", 0)),
        device=str(doc.get("device", "")),
        format=entities.ModelFormat(fmt) if fmt else None,
        preferred_batch_sizes=tuple(int(p) for p in doc.get("preferred_batch_sizes", ())),
        max_queue_size=int(doc.get("max_queue_size", 0)),
    )


def target_statuses_to_json(targets: tuple[entities.TargetStatus, ...]) -> str:
    return json.dumps(
        [
            {"ref": t.ref, "version": t.version, "state": t.state.value, "reason": t.reason, "shadow": t.shadow}
            for t in targets
        ]
    )


def target_statuses_from_json(text: str) -> tuple[entities.TargetStatus, ...]:
    return tuple(
        entities.TargetStatus(
            ref=t["ref"],
            version=int(t["version"]),
            state=entities.TargetState(t["state"]),
            reason=t.get("reason", ""),
            shadow=bool(t.get("shadow", False)),
        )
        for t in json.loads(text or "[]")
    )
