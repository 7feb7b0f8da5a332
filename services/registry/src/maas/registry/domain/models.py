"""Registered models: create, read, list, update, delete."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db import reads
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import AliasRow, ModelRow, ModelTagRow, VersionRow
from maas.registry.domain import events, paging
from maas.registry.domain.filters import has_tags


def get_row(session: Session, name: str, *, lock: bool = False) -> ModelRow:
    query = select(ModelRow).where(ModelRow.name == name)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise errors.NotFound(f"model '{name}' not found")
    return row


class ModelService:
    def __init__(
        self,
        db: Database,
        on_event: Callable[[list[entities.Event]], None],
        on_blobs_released: Callable[[list[str]], None],
    ) -> None:
        self._db = db
        self._on_event = on_event
        self._on_blobs_released = on_blobs_released

    def create(self, name: str, description: str, tags: dict[str, str]) -> entities.Model:
        names.model_name(name, "name")
        names.text_value(description, "description")
        names.tags(tags)

        def tx(s: Session) -> entities.Model:
            if s.scalar(select(ModelRow.id).where(ModelRow.name == name)) is not None:
                raise errors.AlreadyExists(f"model '{name}' already exists")
            ts = now_ms()
            row = ModelRow(name=name, description=description, last_version=0, created_at_ms=ts, updated_at_ms=ts)
            row.tags = [ModelTagRow(key=k, value=v) for k, v in tags.items()]
            row.aliases = []
            s.add(row)
            s.flush()
            events.append(s, entities.EventType.MODEL_CREATED, name)
            return row.to_entity()

        try:
            model = events.write(self._db, tx, self._on_event)
        except errors.AlreadyExists as exc:
            # Two creates raced past the check: the unique index decided.
            raise errors.AlreadyExists(f"model '{name}' already exists") from exc
        return model

    def get(self, name: str) -> entities.Model:
        names.model_name(name, "name")
        return self._db.read(lambda s: get_row(s, name).to_entity())

    def search(
        self, name_prefix: str, tags: list[entities.TagFilter], size: int, token: str
    ) -> entities.Page[entities.Model]:
        if name_prefix:
            names.text_value(name_prefix, "name_prefix", 128)
        for f in tags:
            names.tag_key(f.key, "tags")
        limit = paging.page_size(size)
        scope = paging.fingerprint("models", name_prefix, [(f.key, f.value) for f in tags])
        after = paging.decode(token, scope)

        def tx(s: Session) -> entities.Page[entities.Model]:
            query = reads.select_models().order_by(ModelRow.name).limit(limit + 1)
            if name_prefix:
                query = query.where(ModelRow.name.startswith(name_prefix, autoescape=True))
            for clause in has_tags(ModelTagRow.model_id, ModelTagRow.key, ModelTagRow.value, ModelRow.id, tags):
                query = query.where(clause)
            if after:
                query = query.where(ModelRow.name > str(after[0]))
            conn = s.connection()
            rows = list(conn.execute(query).all())
            more = len(rows) > limit
            items = reads.models_of(conn, rows[:limit])
            next_token = paging.encode([items[-1].name], scope) if more else ""
            return entities.Page(items, next_token)

        return self._db.read(tx)

    def update(
        self, name: str, description: str | None, set_tags: dict[str, str], delete_tags: list[str]
    ) -> entities.Model:
        names.model_name(name, "name")
        if description is not None:
            names.text_value(description, "description")
        names.tags(set_tags, "set_tags")
        for key in delete_tags:
            names.tag_key(key, "delete_tags")

        def tx(s: Session) -> entities.Model:
            row = get_row(s, name, lock=True)
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
                    row.tags.append(ModelTagRow(key=key, value=value))
            row.updated_at_ms = now_ms()
            s.flush()
            return row.to_entity()

        return self._db.write(tx)

    def delete(self, name: str, force: bool) -> None:
        names.model_name(name, "name")

        def tx(s: Session) -> list[str]:
            row = get_row(s, name, lock=True)
            if row.aliases and not force:
                held = ", ".join(sorted(f"{a.name}->{a.version_number}" for a in row.aliases))
                raise errors.FailedPrecondition(f"model '{name}' has aliases ({held}); delete them first or pass force")
            shas = set(
                s.scalars(select(VersionRow.sha256).where(VersionRow.model_id == row.id, VersionRow.sha256 != ""))
            )
            s.execute(delete(AliasRow).where(AliasRow.model_id == row.id))
            s.execute(delete(VersionRow).where(VersionRow.model_id == row.id))
            s.execute(delete(ModelRow).where(ModelRow.id == row.id))
            still_used = set(s.scalars(select(VersionRow.sha256).where(VersionRow.sha256.in_(shas)))) if shas else set()
            events.append(s, entities.EventType.MODEL_DELETED, name)
            return sorted(shas - still_used)

        released = events.write(self._db, tx, self._on_event)
        if released:
            self._on_blobs_released(released)
