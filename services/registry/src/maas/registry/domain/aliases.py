"""Aliases: movable names (production, staging, ...) for one version each."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms
from maas.registry.domain import events, models


class AliasService:
    def __init__(self, db: Database, on_event: Callable[[list[entities.Event]], None]) -> None:
        self._db = db
        self._on_event = on_event

    def set(self, model: str, alias: str, number: int) -> entities.Alias:
        names.model_name(model)
        names.alias_name(alias)
        names.version_number(number)

        def tx(conn: Connection, log: events.Log) -> entities.Alias:
            # The model and target version rows (both locked) and the alias as it stands, in one read.
            found = st.ALIAS_TARGET.first(conn, {"model": model, "number": number, "alias": alias})
            if found is None:
                if st.MODEL_ID.scalar(conn, {"name": model}) is None:
                    raise errors.NotFound(f"model '{model}' not found")
                raise errors.NotFound(f"version {model}/{number} not found")
            model_id, version_id, status, archived, previous, updated_at_ms = found
            if status != entities.VersionStatus.READY.value:
                raise errors.FailedPrecondition(
                    f"version {model}/{number} is {status}; an alias can only point at a READY version"
                )
            if archived:
                raise errors.FailedPrecondition(f"version {model}/{number} is archived")
            if previous == number:
                return entities.Alias(model, alias, number, previous, updated_at_ms)
            ts = now_ms()
            moved = {
                "model_id": model_id,
                "alias": alias,
                "name": alias,
                "version_id": version_id,
                "number": number,
                "version_number": number,
                "now_ms": ts,
                "updated_at_ms": ts,
            }
            if previous is None:
                st.INSERT_ALIAS.execute(conn, moved)
            else:
                st.MOVE_ALIAS.execute(conn, moved)
            log.append(
                entities.EventType.ALIAS_MOVED, model, version=number, alias=alias, previous_version=previous or 0
            )
            return entities.Alias(model, alias, number, previous or 0, ts)

        return events.write(self._db, tx, self._on_event)

    def delete(self, model: str, alias: str) -> None:
        names.model_name(model)
        names.alias_name(alias)

        def tx(conn: Connection, log: events.Log) -> None:
            model_id = models.lock(conn, model)
            key = {"model_id": model_id, "alias": alias}
            number = st.ALIAS_NUMBER.scalar(conn, key)
            if number is None:
                raise errors.NotFound(f"alias {model}@{alias} not found")
            st.DELETE_ALIAS.execute(conn, key)
            log.append(entities.EventType.ALIAS_DELETED, model, version=number, alias=alias)

        events.write(self._db, tx, self._on_event)
