"""Model versions: allocation, reads, lists, edits, archive and delete."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from maas.common import architectures, errors, names, text_task
from maas.common.datatypes import DATATYPES
from maas.common.prepared import Prepared
from maas.registry import entities
from maas.registry.db import reads
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import signature_to_json
from maas.registry.domain import events, lineage, models, paging, version_search

MAX_ARCHITECTURE_BYTES = 64 * 1024
MAX_TENSORS = 256


def _one(conn: Connection, statement: Prepared, params: dict[str, object]) -> entities.Version | None:
    return reads.version_from_rows(statement.rows(conn, params))


def get(conn: Connection, model: str, number: int) -> entities.Version:
    version = _one(conn, st.VERSION_BY_NUMBER, {"model": model, "number": number})
    if version is None:
        raise errors.NotFound(f"version {model}/{number} not found")
    return version


def resolve(conn: Connection, ref: names.VersionRef) -> entities.Version:
    if ref.version:
        return get(conn, ref.model, ref.version)
    if ref.alias == "latest":
        version = _one(conn, st.LATEST_READY_VERSION, {"model": ref.model})
        missing = f"model '{ref.model}' has no READY version"
    else:
        version = _one(conn, st.VERSION_BY_ALIAS, {"model": ref.model, "alias": ref.alias})
        missing = f"alias {ref.model}@{ref.alias} not found"
    if version is None:
        if st.MODEL_ID.scalar(conn, {"name": ref.model}) is None:
            raise errors.NotFound(f"model '{ref.model}' not found")
        raise errors.NotFound(missing)
    return version


def _insert_in_one_statement(
    conn: Connection, log: events.Log, row: dict[str, Any], tags: dict[str, str], metrics: dict[str, float]
) -> int:
    created = st.CREATE_VERSION_PG.first(
        conn,
        {
            **row,
            "tag_keys": list(tags),
            "tag_values": list(tags.values()),
            "metric_keys": list(metrics),
            "metric_values": list(metrics.values()),
        },
    )
    if created is None:
        raise errors.NotFound(f"model '{row['model']}' not found")
    number, event_id = created
    log.added(entities.Event(event_id, entities.EventType.VERSION_CREATED, row["model"], number, "", 0, row["now_ms"]))
    return int(number)


def _insert_step_by_step(
    conn: Connection, log: events.Log, row: dict[str, Any], tags: dict[str, str], metrics: dict[str, float]
) -> int:
    # The row lock this UPDATE takes (on SQLite: the database lock of BEGIN
    # IMMEDIATE) serializes number allocation per model; the unique
    # (model_id, number) index stands behind it.
    allocated = st.ALLOCATE_VERSION.first(conn, {"model_name": row["model"], "now_ms": row["now_ms"]})
    if allocated is None:
        raise errors.NotFound(f"model '{row['model']}' not found")
    model_id, number = allocated
    version_id = st.INSERT_VERSION.scalar(
        conn,
        {
            **row,
            "model_id": model_id,
            "number": number,
            "status": entities.VersionStatus.PENDING.value,
            "status_reason": "",
            "archived": False,
            "size_bytes": 0,
            "sha256": "",
            "created_at_ms": row["now_ms"],
            "ready_at_ms": 0,
        },
    )
    st.INSERT_VERSION_TAG.executemany(conn, [{"version_id": version_id, "key": k, "value": v} for k, v in tags.items()])
    st.INSERT_VERSION_METRIC.executemany(
        conn, [{"version_id": version_id, "model_id": model_id, "key": k, "value": v} for k, v in metrics.items()]
    )
    log.append(entities.EventType.VERSION_CREATED, row["model"], version=number)
    return int(number)


def lock(conn: Connection, model: str, number: int) -> tuple[int, str, str, bool, str]:
    """(id, status, format, archived, sha256) of the version, its row locked to the end of the transaction."""
    row = st.LOCK_VERSION.first(conn, {"model": model, "number": number})
    if row is None:
        raise errors.NotFound(f"version {model}/{number} not found")
    return int(row[0]), row[1], row[2], bool(row[3]), row[4]


def validate_signature(signature: entities.Signature) -> None:
    for side, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        if len(specs) > MAX_TENSORS:
            raise errors.InvalidArgument(f"signature.{side}: at most {MAX_TENSORS} tensors")
        seen: set[str] = set()
        for spec in specs:
            where = f"signature.{side}[{spec.name or '?'}]"
            if not names.TAG_KEY.fullmatch(spec.name):
                raise errors.InvalidArgument(f"{where}: invalid tensor name")
            if spec.name in seen:
                raise errors.InvalidArgument(f"{where}: duplicate tensor name")
            seen.add(spec.name)
            if spec.datatype not in DATATYPES:
                raise errors.InvalidArgument(f"{where}: unknown datatype '{spec.datatype}'")
            if len(spec.shape) > 16 or any(d < -1 for d in spec.shape):
                raise errors.InvalidArgument(f"{where}: dims must be -1 (dynamic) or >= 0, rank <= 16")


def validate_new(new: entities.NewVersion, trusted_formats: bool) -> tuple[str, str]:
    """Check a CreateVersion request; returns the architecture and the lineage as JSON text."""
    names.model_name(new.model)
    if new.format.carries_code and not trusted_formats:
        raise errors.InvalidArgument(
            f"format: {new.format.value} carries code and is refused; the operator can enable trusted formats"
        )
    if new.format.additional_only:
        what = (
            "a text model's tokenizer, not a model"
            if not new.format.edge_only
            else "an edge format nothing here serves"
        )
        raise errors.InvalidArgument(
            f"format: {new.format.value} is {what}; create the version with its "
            "ONNX or safetensors weights and add the file to it with UploadArtifact"
        )
    text_task.max_length_of(new.architecture)  # a text model's document names what is wrong with it
    arch_json = json.dumps(new.architecture, sort_keys=True, allow_nan=False)
    if len(arch_json) > MAX_ARCHITECTURE_BYTES:
        raise errors.InvalidArgument(f"architecture: larger than {MAX_ARCHITECTURE_BYTES} bytes")
    if new.format == entities.ModelFormat.SAFETENSORS:
        if not new.architecture.get("name"):
            raise errors.InvalidArgument(
                "architecture: safetensors weights need a declarative architecture with a 'name'"
            )
        # The catalog's name and argument checks (no torch): no PENDING version for what no runtime builds.
        architectures.parse(new.architecture)
    validate_signature(new.signature)
    if new.run_id:
        names.run_id(new.run_id)
    names.text_value(new.description, "description")
    names.tags(new.tags)
    validate_metrics(new.metrics)
    return arch_json, lineage.validate(new.lineage)


def validate_metrics(metrics: dict[str, float]) -> None:
    if len(metrics) > 1000:
        raise errors.InvalidArgument("metrics: at most 1000 keys")
    for key, value in metrics.items():
        names.metric_key(key, "metrics")
        if not math.isfinite(value):
            raise errors.InvalidArgument(f"metrics[{key}]: must be a finite number")


class VersionService:
    def __init__(
        self,
        db: Database,
        *,
        trusted_formats: bool,
        on_event: Callable[[list[entities.Event]], None],
        on_blobs_released: Callable[[list[str]], None],
    ) -> None:
        self._db = db
        self._trusted = trusted_formats
        self._on_event = on_event
        self._on_blobs_released = on_blobs_released

    # ----------------------------------------------------------------- create

    def create(self, new: entities.NewVersion) -> entities.Version:
        arch_json, lineage_json = validate_new(new, self._trusted)
        sig_json = signature_to_json(new.signature)

        def tx(conn: Connection, log: events.Log) -> entities.Version:
            ts = now_ms()
            run_pk = None
            metrics = new.metrics
            if new.run_id:
                run_pk = st.RUN_PK.scalar(conn, {"run_id": new.run_id})
                if run_pk is None:
                    raise errors.NotFound(f"run '{new.run_id}' not found")
                if not metrics:
                    metrics = dict(st.RUN_LATEST_METRICS.rows(conn, {"run_pk": run_pk}))
            lineage.check_parent(conn, new.lineage)
            row = {
                "model": new.model,
                "format": new.format.value,
                "architecture_json": arch_json,
                "signature_json": sig_json,
                "run_pk": run_pk,
                "description": new.description,
                "lineage_json": lineage_json,
                "now_ms": ts,
            }
            if conn.dialect.name == "postgresql":
                number = _insert_in_one_statement(conn, log, row, new.tags, metrics)
            else:
                number = _insert_step_by_step(conn, log, row, new.tags, metrics)
            return entities.Version(
                model=new.model,
                version=number,
                status=entities.VersionStatus.PENDING,
                status_reason="",
                format=new.format,
                architecture_json=arch_json,
                signature=new.signature,
                run_id=new.run_id,
                description=new.description,
                tags=dict(new.tags),
                metrics=dict(metrics),
                size_bytes=0,
                sha256="",
                archived=False,
                aliases=(),
                created_at_ms=ts,
                ready_at_ms=0,
                lineage=new.lineage,
            )

        return events.write(self._db, tx, self._on_event)

    # ------------------------------------------------------------------ reads

    def get(self, model: str, number: int) -> entities.Version:
        names.model_name(model)
        names.version_number(number)
        return self._db.read_conn(lambda conn: get(conn, model, number))

    def resolve(self, ref: str) -> entities.Version:
        parsed = names.parse_ref(ref)
        return self._db.read_conn(lambda conn: resolve(conn, parsed))

    def search(
        self,
        model: str,
        *,
        statuses: list[entities.VersionStatus],
        tags: list[entities.TagFilter],
        order: entities.VersionOrder,
        order_metric: str,
        include_archived: bool,
        size: int,
        token: str,
    ) -> entities.Page[entities.Version]:
        names.model_name(model)
        for f in tags:
            names.tag_key(f.key, "tags")
        by_metric = order in (entities.VersionOrder.METRIC_DESC, entities.VersionOrder.METRIC_ASC)
        if by_metric:
            names.metric_key(order_metric, "order_metric")
        elif order_metric:
            raise errors.InvalidArgument("order_metric: only with a METRIC order")
        limit = paging.page_size(size)
        scope = paging.fingerprint(
            "versions", model, sorted(statuses), [(f.key, f.value) for f in tags], order, order_metric, include_archived
        )
        after = paging.decode(token, scope)

        def tx(conn: Connection) -> entities.Page[entities.Version]:
            return version_search.page(
                conn,
                model,
                statuses=statuses,
                tags=tags,
                order=order,
                order_metric=order_metric,
                include_archived=include_archived,
                limit=limit,
                after=after,
                scope=scope,
            )

        return self._db.read_conn(tx)

    # ------------------------------------------------------------------ edits

    def update(
        self, model: str, number: int, description: str | None, set_tags: dict[str, str], delete_tags: list[str]
    ) -> entities.Version:
        names.model_name(model)
        names.version_number(number)
        if description is not None:
            names.text_value(description, "description")
        names.tags(set_tags, "set_tags")
        for key in delete_tags:
            names.tag_key(key, "delete_tags")

        def tx(conn: Connection) -> entities.Version:
            version_id = lock(conn, model, number)[0]
            if description is not None:
                st.SET_VERSION_DESCRIPTION.execute(conn, {"version_id": version_id, "description": description})
            replaced = {*delete_tags, *set_tags}
            st.DELETE_VERSION_TAG.executemany(conn, [{"version_id": version_id, "key": k} for k in replaced])
            st.INSERT_VERSION_TAG.executemany(
                conn, [{"version_id": version_id, "key": k, "value": v} for k, v in set_tags.items()]
            )
            return get(conn, model, number)

        return self._db.write_conn(tx)

    def fail(self, model: str, number: int, reason: str) -> entities.Version:
        names.model_name(model)
        names.version_number(number)
        names.text_value(reason, "reason")

        def tx(conn: Connection, log: events.Log) -> entities.Version:
            version_id, status, *_ = lock(conn, model, number)
            if status == entities.VersionStatus.READY.value:
                raise errors.FailedPrecondition(f"version {model}/{number} is READY and cannot fail")
            if status == entities.VersionStatus.PENDING.value:
                st.FAIL_VERSION.execute(conn, {"version_id": version_id, "reason": reason or "failed"})
                log.append(entities.EventType.VERSION_FAILED, model, version=number)
            return get(conn, model, number)

        return events.write(self._db, tx, self._on_event)

    def archive(self, model: str, number: int, archived: bool) -> entities.Version:
        names.model_name(model)
        names.version_number(number)

        def tx(conn: Connection, log: events.Log) -> entities.Version:
            version_id, _, _, was_archived, _ = lock(conn, model, number)
            if archived:
                held = sorted(a for (a,) in st.VERSION_ALIASES.rows(conn, {"version_id": version_id}))
                if held:
                    raise errors.FailedPrecondition(f"version {model}/{number} is held by aliases ({', '.join(held)})")
            if was_archived != archived:
                st.ARCHIVE_VERSION.execute(conn, {"version_id": version_id, "archived": archived})
                if archived:
                    log.append(entities.EventType.VERSION_ARCHIVED, model, version=number)
            return get(conn, model, number)

        return events.write(self._db, tx, self._on_event)

    def delete(self, model: str, number: int, force: bool) -> None:
        names.model_name(model)
        names.version_number(number)

        def tx(conn: Connection, log: events.Log) -> list[str]:
            models.lock(conn, model)
            version_id, _, _, _, sha = lock(conn, model, number)
            held = sorted(a for (a,) in st.VERSION_ALIASES.rows(conn, {"version_id": version_id}))
            if held and not force:
                raise errors.FailedPrecondition(
                    f"version {model}/{number} is held by aliases ({', '.join(held)}); move them or pass force"
                )
            shas = {sha} | {s for _, s in st.VERSION_ARTIFACTS.rows(conn, {"version_id": version_id})}
            shas.discard("")
            conn.execute(delete(st.aliases).where(st.aliases.c.version_id == version_id))
            conn.execute(delete(st.versions).where(st.versions.c.id == version_id))
            for alias in held:
                log.append(entities.EventType.ALIAS_DELETED, model, version=number, alias=alias)
            log.append(entities.EventType.VERSION_DELETED, model, version=number)
            # Blobs are shared by content: release only those no artifact holds any more.
            return sorted(s for s in shas if st.VERSION_WITH_BLOB.scalar(conn, {"sha256": s}) is None)

        released = events.write(self._db, tx, self._on_event)
        if released:
            self._on_blobs_released(released)
