"""Aliases: movable names (production, staging, ...) for one version each."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import AliasRow
from maas.registry.domain import events
from maas.registry.domain.models import get_row as get_model_row
from maas.registry.domain.versions import get_row as get_version_row


class AliasService:
    def __init__(self, db: Database, on_event: Callable[[list[entities.Event]], None]) -> None:
        self._db = db
        self._on_event = on_event

    def set(self, model: str, alias: str, number: int) -> entities.Alias:
        names.model_name(model)
        names.alias_name(alias)
        names.version_number(number)

        def tx(s: Session) -> entities.Alias:
            model_row = get_model_row(s, model, lock=True)
            target = get_version_row(s, model, number)
            if target.status != entities.VersionStatus.READY.value:
                raise errors.FailedPrecondition(
                    f"version {model}/{number} is {target.status}; an alias can only point at a READY version"
                )
            if target.archived:
                raise errors.FailedPrecondition(f"version {model}/{number} is archived")
            row = s.scalars(
                select(AliasRow).where(AliasRow.model_id == model_row.id, AliasRow.name == alias)
            ).one_or_none()
            ts = now_ms()
            previous = 0
            if row is None:
                row = AliasRow(
                    model_id=model_row.id, name=alias, version_id=target.id, version_number=number, updated_at_ms=ts
                )
                s.add(row)
            else:
                previous = row.version_number
                if previous == number:
                    return entities.Alias(model, alias, number, previous, row.updated_at_ms)
                row.version_id = target.id
                row.version_number = number
                row.updated_at_ms = ts
            s.flush()
            events.append(
                s, entities.EventType.ALIAS_MOVED, model, version=number, alias=alias, previous_version=previous
            )
            return entities.Alias(model, alias, number, previous, ts)

        return events.write(self._db, tx, self._on_event)

    def delete(self, model: str, alias: str) -> None:
        names.model_name(model)
        names.alias_name(alias)

        def tx(s: Session) -> None:
            model_row = get_model_row(s, model, lock=True)
            row = s.scalars(
                select(AliasRow).where(AliasRow.model_id == model_row.id, AliasRow.name == alias)
            ).one_or_none()
            if row is None:
                raise errors.NotFound(f"alias {model}@{alias} not found")
            number = row.version_number
            s.delete(row)
            s.flush()
            events.append(s, entities.EventType.ALIAS_DELETED, model, version=number, alias=alias)

        events.write(self._db, tx, self._on_event)
