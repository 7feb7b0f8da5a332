"""Model versions: allocation, reads, lists, edits, archive and delete."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from maas.common import errors, names
from maas.common.datatypes import DATATYPES
from maas.registry import entities
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import (
    AliasRow,
    ModelRow,
    VersionRow,
    VersionTagRow,
    signature_to_json,
)
from maas.registry.domain import events, paging, version_search
from maas.registry.domain.models import get_row as get_model_row

MAX_ARCHITECTURE_BYTES = 64 * 1024
MAX_TENSORS = 256


def get_row(session: Session, model: str, number: int, *, lock: bool = False) -> VersionRow:
    query = (
        select(VersionRow)
        .join(ModelRow, VersionRow.model_id == ModelRow.id)
        .where(ModelRow.name == model, VersionRow.number == number)
    )
    if lock:
        query = query.with_for_update(of=VersionRow)
    row = session.scalars(query).one_or_none()
    if row is None:
        raise errors.NotFound(f"version {model}/{number} not found")
    return row


def latest_ready(session: Session, model: str) -> VersionRow:
    row = session.scalars(
        select(VersionRow)
        .join(ModelRow, VersionRow.model_id == ModelRow.id)
        .where(
            ModelRow.name == model,
            VersionRow.status == entities.VersionStatus.READY.value,
            VersionRow.archived.is_(False),
        )
        .order_by(VersionRow.number.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        get_model_row(session, model)
        raise errors.NotFound(f"model '{model}' has no READY version")
    return row


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


def validate_new(new: entities.NewVersion, trusted_formats: bool) -> str:
    """Check a CreateVersion request; returns the architecture as JSON text."""
    names.model_name(new.model)
    if new.format.carries_code and not trusted_formats:
        raise errors.InvalidArgument(
            f"format: {new.format.value} carries code and is refused; the operator can enable trusted formats"
        )
    arch_json = json.dumps(new.architecture, sort_keys=True, allow_nan=False)
    if len(arch_json) > MAX_ARCHITECTURE_BYTES:
        raise errors.InvalidArgument(f"architecture: larger than {MAX_ARCHITECTURE_BYTES} bytes")
    if new.format == entities.ModelFormat.SAFETENSORS:
        arch_name = new.architecture.get("name")
        if not isinstance(arch_name, str) or not names.TAG_KEY.fullmatch(arch_name):
            raise errors.InvalidArgument(
                "architecture: safetensors weights need a declarative architecture with a 'name'"
            )
    validate_signature(new.signature)
    if new.run_id:
        names.run_id(new.run_id)
    names.text_value(new.description, "description")
    names.tags(new.tags)
    validate_metrics(new.metrics)
    return arch_json


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
        arch_json = validate_new(new, self._trusted)
        sig_json = signature_to_json(new.signature)

        def tx(s: Session) -> entities.Version:
            ts = now_ms()
            conn = s.connection()
            allocated = conn.execute(st.ALLOCATE_VERSION, {"model_name": new.model, "now_ms": ts}).one_or_none()
            if allocated is None:
                raise errors.NotFound(f"model '{new.model}' not found")
            model_id, number = allocated
            run_pk = None
            metrics = dict(new.metrics)
            if new.run_id:
                run_pk = conn.execute(st.RUN_PK, {"run_id": new.run_id}).scalar()
                if run_pk is None:
                    raise errors.NotFound(f"run '{new.run_id}' not found")
                if not metrics:
                    metrics = {key: value for key, value in conn.execute(st.RUN_LATEST_METRICS, {"run_pk": run_pk})}
            version_id = conn.execute(
                st.INSERT_VERSION,
                {
                    "model_id": model_id,
                    "number": number,
                    "status": entities.VersionStatus.PENDING.value,
                    "status_reason": "",
                    "format": new.format.value,
                    "architecture_json": arch_json,
                    "signature_json": sig_json,
                    "run_pk": run_pk,
                    "description": new.description,
                    "archived": False,
                    "size_bytes": 0,
                    "sha256": "",
                    "created_at_ms": ts,
                    "ready_at_ms": 0,
                },
            ).scalar_one()
            if new.tags:
                conn.execute(
                    st.INSERT_VERSION_TAG,
                    [{"version_id": version_id, "key": k, "value": v} for k, v in new.tags.items()],
                )
            if metrics:
                conn.execute(
                    st.INSERT_VERSION_METRIC,
                    [
                        {"version_id": version_id, "model_id": model_id, "key": k, "value": v}
                        for k, v in metrics.items()
                    ],
                )
            events.append(s, entities.EventType.VERSION_CREATED, new.model, version=number)
            return entities.Version(
                model=new.model,
                version=number,
                status=entities.VersionStatus.PENDING,
                status_reason="",
                format=new.format,
                architecture=json.loads(arch_json),
                signature=new.signature,
                run_id=new.run_id,
                description=new.description,
                tags=dict(new.tags),
                metrics=metrics,
                size_bytes=0,
                sha256="",
                archived=False,
                aliases=(),
                created_at_ms=ts,
                ready_at_ms=0,
            )

        return events.write(self._db, tx, self._on_event)

    # ------------------------------------------------------------------ reads

    def get(self, model: str, number: int) -> entities.Version:
        names.model_name(model)
        names.version_number(number)
        return self._db.read(lambda s: get_row(s, model, number).to_entity())

    def resolve(self, ref: str) -> entities.Version:
        parsed = names.parse_ref(ref)

        def tx(s: Session) -> entities.Version:
            if parsed.version:
                return get_row(s, parsed.model, parsed.version).to_entity()
            if parsed.alias == "latest":
                return latest_ready(s, parsed.model).to_entity()
            model = get_model_row(s, parsed.model)
            alias = next((a for a in model.aliases if a.name == parsed.alias), None)
            if alias is None:
                raise errors.NotFound(f"alias {parsed.model}@{parsed.alias} not found")
            return get_row(s, parsed.model, alias.version_number).to_entity()

        return self._db.read(tx)

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

        def tx(s: Session) -> entities.Page[entities.Version]:
            return version_search.page(
                s.connection(),
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

        return self._db.read(tx)

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

        def tx(s: Session) -> entities.Version:
            row = get_row(s, model, number, lock=True)
            if description is not None:
                row.description = description
            current = {t.key: t for t in row.tags}
            for key in delete_tags:
                if key in current:
                    row.tags.remove(current.pop(key))
            for key, value in set_tags.items():
                if key in current:
                    current[key].value = value
                else:
                    row.tags.append(VersionTagRow(key=key, value=value))
            s.flush()
            return row.to_entity()

        return self._db.write(tx)

    def fail(self, model: str, number: int, reason: str) -> entities.Version:
        names.model_name(model)
        names.version_number(number)
        names.text_value(reason, "reason")

        def tx(s: Session) -> entities.Version:
            row = get_row(s, model, number, lock=True)
            if row.status == entities.VersionStatus.READY.value:
                raise errors.FailedPrecondition(f"version {model}/{number} is READY and cannot fail")
            if row.status == entities.VersionStatus.PENDING.value:
                row.status = entities.VersionStatus.FAILED.value
                row.status_reason = reason or "failed"
                s.flush()
                events.append(s, entities.EventType.VERSION_FAILED, model, version=number)
            return row.to_entity()

        return events.write(self._db, tx, self._on_event)

    def archive(self, model: str, number: int, archived: bool) -> entities.Version:
        names.model_name(model)
        names.version_number(number)

        def tx(s: Session) -> entities.Version:
            row = get_row(s, model, number, lock=True)
            if archived and row.aliases:
                held = ", ".join(sorted(a.name for a in row.aliases))
                raise errors.FailedPrecondition(f"version {model}/{number} is held by aliases ({held})")
            if row.archived != archived:
                row.archived = archived
                s.flush()
                if archived:
                    events.append(s, entities.EventType.VERSION_ARCHIVED, model, version=number)
            return row.to_entity()

        return events.write(self._db, tx, self._on_event)

    def delete(self, model: str, number: int, force: bool) -> None:
        names.model_name(model)
        names.version_number(number)

        def tx(s: Session) -> list[str]:
            get_model_row(s, model, lock=True)
            row = get_row(s, model, number, lock=True)
            held = sorted(a.name for a in row.aliases)
            if held and not force:
                raise errors.FailedPrecondition(
                    f"version {model}/{number} is held by aliases ({', '.join(held)}); move them or pass force"
                )
            sha = row.sha256
            s.execute(delete(AliasRow).where(AliasRow.version_id == row.id))
            s.execute(delete(VersionRow).where(VersionRow.id == row.id))
            still_used = (
                bool(sha) and s.scalar(select(VersionRow.id).where(VersionRow.sha256 == sha).limit(1)) is not None
            )
            for alias in held:
                events.append(s, entities.EventType.ALIAS_DELETED, model, version=number, alias=alias)
            events.append(s, entities.EventType.VERSION_DELETED, model, version=number)
            return [sha] if sha and not still_used else []

        released = events.write(self._db, tx, self._on_event)
        if released:
            self._on_blobs_released(released)
