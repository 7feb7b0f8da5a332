"""Registered models: create, read, list, update, delete."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.engine import Connection

from maas.common import errors, names
from maas.common.prepared import Prepared
from maas.registry import entities
from maas.registry.db import reads
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms
from maas.registry.domain import events, paging
from maas.registry.domain.filters import bytewise, has_tags, prefix_range, tag_params

# The characters of names.MODEL_NAME: a prefix with any other is a prefix of no model.
NAME_PREFIX = re.compile(r"[A-Za-z0-9_.-]+")


def get(conn: Connection, name: str) -> entities.Model:
    model = reads.model_from_rows(st.MODEL_WITH_CHILDREN.rows(conn, {"name": name}))
    if model is None:
        raise errors.NotFound(f"model '{name}' not found")
    return model


def lock(conn: Connection, name: str) -> int:
    """The model's id, its row locked to the end of the transaction."""
    model_id = st.LOCK_MODEL.scalar(conn, {"name": name})
    if model_id is None:
        raise errors.NotFound(f"model '{name}' not found")
    return int(model_id)


def refuse_unless_forced(conn: Connection, name: str, model_id: int) -> None:
    """Without force a model with something servable stays; the refusal says what deleting it would remove."""
    v, a = st.versions.c, st.aliases.c
    held = conn.execute(select(a.name, a.version_number).where(a.model_id == model_id)).all()
    by_status = conn.execute(select(v.status, func.count()).where(v.model_id == model_id).group_by(v.status))
    counts = {str(status): int(n) for status, n in by_status}
    ready = counts.get(entities.VersionStatus.READY.value, 0)
    if not held and not ready:
        return
    total = sum(counts.values())
    what = [f"{total} version{'' if total == 1 else 's'} ({ready} READY)"]
    if held:
        what.append("aliases " + ", ".join(sorted(f"{alias}->{number}" for alias, number in held)))
    raise errors.FailedPrecondition(f"model '{name}' has {' and '.join(what)}; pass force to delete them with it")


def _name(row: reads.Row) -> str:
    return str(row[2])


@functools.lru_cache(maxsize=64)
def _page_statement(prefix: bool, tags: tuple[bool, ...], after: bool) -> Prepared:
    """A page of ListModels with its tags and aliases, by shape; values as parameters."""
    m, t = st.models.c, st.model_tags.c
    query = select(*st.MODEL_COLUMNS).order_by(m.name).limit(bindparam("limit"))
    if prefix:
        name = bytewise(m.name)
        query = query.where(name >= bindparam("name_from"), name < bindparam("name_until"))
    query = query.where(*has_tags(t.model_id, t.key, t.value, m.id, tag_params(tags)))
    if after:
        query = query.where(m.name > bindparam("after_name"))
    return Prepared(st.models_with_children(query))


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

        def tx(conn: Connection, log: events.Log) -> entities.Model:
            ts = now_ms()
            # The unique index on the name decides between racing creates (AlreadyExists).
            model_id = st.INSERT_MODEL.scalar(
                conn,
                {"name": name, "description": description, "last_version": 0, "created_at_ms": ts, "updated_at_ms": ts},
            )
            st.INSERT_MODEL_TAG.executemany(
                conn, [{"model_id": model_id, "key": k, "value": v} for k, v in tags.items()]
            )
            log.append(entities.EventType.MODEL_CREATED, name)
            return entities.Model(name, description, dict(tags), {}, 0, ts, ts)

        try:
            return events.write(self._db, tx, self._on_event)
        except errors.AlreadyExists as exc:
            raise errors.AlreadyExists(f"model '{name}' already exists") from exc

    def get(self, name: str) -> entities.Model:
        names.model_name(name, "name")
        return self._db.read_conn(lambda conn: get(conn, name))

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
        params: dict[str, object] = {"limit": limit + 1}
        if name_prefix:
            if not NAME_PREFIX.fullmatch(name_prefix):
                return entities.Page([], "")  # no model name has such a prefix
            params["name_from"], params["name_until"] = prefix_range(name_prefix)
        for i, f in enumerate(tags):
            params[f"tag_key_{i}"] = f.key
            params[f"tag_value_{i}"] = f.value
        if after:
            params["after_name"] = str(after[0])
        statement = _page_statement(bool(name_prefix), tuple(bool(f.value) for f in tags), bool(after))

        def tx(conn: Connection) -> entities.Page[entities.Model]:
            rows, items = reads.models_from_rows(statement.rows(conn, params), _name)
            next_token = paging.encode([items[limit - 1].name], scope) if len(rows) > limit else ""
            return entities.Page(items[:limit], next_token)

        return self._db.read_conn(tx)

    def update(
        self, name: str, description: str | None, set_tags: dict[str, str], delete_tags: list[str]
    ) -> entities.Model:
        names.model_name(name, "name")
        if description is not None:
            names.text_value(description, "description")
        names.tags(set_tags, "set_tags")
        for key in delete_tags:
            names.tag_key(key, "delete_tags")

        def tx(conn: Connection) -> entities.Model:
            model_id = lock(conn, name)
            if description is not None:
                st.SET_MODEL_DESCRIPTION.execute(conn, {"model_id": model_id, "description": description})
            replaced = {*delete_tags, *set_tags}
            st.DELETE_MODEL_TAG.executemany(conn, [{"model_id": model_id, "key": k} for k in replaced])
            st.INSERT_MODEL_TAG.executemany(
                conn, [{"model_id": model_id, "key": k, "value": v} for k, v in set_tags.items()]
            )
            st.TOUCH_MODEL.execute(conn, {"model_id": model_id, "now_ms": now_ms()})
            return get(conn, name)

        return self._db.write_conn(tx)

    def delete(self, name: str, force: bool) -> None:
        names.model_name(name, "name")
        v, a = st.versions.c, st.aliases.c

        def tx(conn: Connection, log: events.Log) -> list[str]:
            model_id = lock(conn, name)
            if not force:
                refuse_unless_forced(conn, name, model_id)
            f = st.version_artifacts.c
            shas = set(conn.scalars(select(v.sha256).where(v.model_id == model_id, v.sha256 != "")))
            shas |= set(
                conn.scalars(select(f.sha256).join(st.versions, f.version_id == v.id).where(v.model_id == model_id))
            )
            conn.execute(delete(st.aliases).where(a.model_id == model_id))
            conn.execute(delete(st.versions).where(v.model_id == model_id))
            conn.execute(delete(st.models).where(st.models.c.id == model_id))
            # Blobs are shared by content: release only those no version or artifact holds any more.
            still_used = (
                set(conn.scalars(select(v.sha256).where(v.sha256.in_(shas))))
                | set(conn.scalars(select(f.sha256).where(f.sha256.in_(shas))))
                if shas
                else set()
            )
            log.append(entities.EventType.MODEL_DELETED, name)
            return sorted(shas - still_used)

        released = events.write(self._db, tx, self._on_event)
        if released:
            self._on_blobs_released(released)
