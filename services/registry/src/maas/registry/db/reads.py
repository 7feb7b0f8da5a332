"""Rows to entities, and the bulk reads of the list calls.

One object comes from one of the UNION ALL statements in `statements` (its
row, then its children); a page of a list comes as its rows, then the
children of all of them in one more query. Either way the entities are built
straight from plain tuples, with the architecture kept as the stored JSON
text and the signature parsed once per distinct text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, Select, String, bindparam, literal, null, select, union_all
from sqlalchemy.engine import Connection

from maas.registry import entities
from maas.registry.db.schema import signature_from_json
from maas.registry.db.statements import (
    VERSION_COLUMNS,
    VERSIONS_FROM,
    aliases,
    model_tags,
    models,
    version_metrics,
    version_tags,
    versions,
)

_STATUSES = {s.value: s for s in entities.VersionStatus}
_FORMATS = {f.value: f for f in entities.ModelFormat}


def _ids(column: Any) -> Any:
    return column.in_(bindparam("ids", expanding=True))


# ---------------------------------------------------------------- versions


def version_of(
    r: Sequence[Any], tags: dict[str, str], metrics: dict[str, float], held: Sequence[str]
) -> entities.Version:
    """The entity of a row of VERSION_COLUMNS (from index 0) and its children."""
    return entities.Version(
        model=r[1],
        version=r[2],
        status=_STATUSES[r[3]],
        status_reason=r[4],
        format=_FORMATS[r[5]],
        architecture_json=r[6],
        signature=signature_from_json(r[7]),
        run_id=r[8] or "",
        description=r[9],
        tags=tags,
        metrics=metrics,
        size_bytes=r[10],
        sha256=r[11],
        archived=bool(r[12]),
        aliases=tuple(sorted(held)),
        created_at_ms=r[13],
        ready_at_ms=r[14],
    )


def version_from_rows(rows: Sequence[Any]) -> entities.Version | None:
    """The version in the rows of a `statements._with_children` statement, or None."""
    main = None
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    held: list[str] = []
    for row in rows:
        kind = row[0]
        if kind == "v":
            main = row[1:]
        elif kind == "t":
            tags[row[2]] = row[5]
        elif kind == "m":
            metrics[row[2]] = row[-1]
        else:
            held.append(row[2])
    return None if main is None else version_of(main, tags, metrics, held)


_VERSION_CHILDREN = union_all(
    select(literal("t"), version_tags.c.version_id, version_tags.c.key, version_tags.c.value, null().cast(Float)).where(
        _ids(version_tags.c.version_id)
    ),
    select(
        literal("m"), version_metrics.c.version_id, version_metrics.c.key, null().cast(String), version_metrics.c.value
    ).where(_ids(version_metrics.c.version_id)),
    select(literal("a"), aliases.c.version_id, aliases.c.name, null().cast(String), null().cast(Float)).where(
        _ids(aliases.c.version_id)
    ),
)


def select_versions(*extra: Any) -> Select[Any]:
    """The columns `versions_of` reads (then `extra`), ready for filters and an order."""
    return select(*VERSION_COLUMNS, *extra).select_from(VERSIONS_FROM)


def versions_of(conn: Connection, rows: Sequence[Any]) -> list[entities.Version]:
    """Entities for rows of `select_versions()`, with their tags, metrics and aliases."""
    if not rows:
        return []
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    metrics: dict[int, dict[str, float]] = defaultdict(dict)
    held: dict[int, list[str]] = defaultdict(list)
    for kind, vid, key, text, number in conn.execute(_VERSION_CHILDREN, {"ids": [r[0] for r in rows]}):
        if kind == "t":
            tags[vid][key] = text
        elif kind == "m":
            metrics[vid][key] = number
        else:
            held[vid].append(key)
    return [version_of(r, tags.get(r[0], {}), metrics.get(r[0], {}), held.get(r[0], ())) for r in rows]


# ------------------------------------------------------------------ models


def model_from_rows(rows: Sequence[Any]) -> entities.Model | None:
    """The model in the rows of `statements.MODEL_WITH_CHILDREN`, or None."""
    main = None
    tags: dict[str, str] = {}
    held: dict[str, int] = {}
    for kind, _id, key, text, number, created, updated in rows:
        if kind == "m":
            main = (key, text, number, created, updated)
        elif kind == "t":
            tags[key] = text
        else:
            held[key] = number
    if main is None:
        return None
    name, description, latest, created, updated = main
    return entities.Model(name, description, tags, held, latest, created, updated)


_MODEL_COLUMNS = (
    models.c.id,
    models.c.name,
    models.c.description,
    models.c.last_version,
    models.c.created_at_ms,
    models.c.updated_at_ms,
)
_MODEL_CHILDREN = union_all(
    select(
        literal("t"), model_tags.c.model_id, model_tags.c.key, model_tags.c.value, null().cast(versions.c.number.type)
    ).where(_ids(model_tags.c.model_id)),
    select(literal("a"), aliases.c.model_id, aliases.c.name, null().cast(String), aliases.c.version_number).where(
        _ids(aliases.c.model_id)
    ),
)


def select_models() -> Select[Any]:
    return select(*_MODEL_COLUMNS)


def models_of(conn: Connection, rows: Sequence[Any]) -> list[entities.Model]:
    """Entities for rows of `select_models()`, with their tags and aliases."""
    if not rows:
        return []
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    held: dict[int, dict[str, int]] = defaultdict(dict)
    for kind, mid, key, text, number in conn.execute(_MODEL_CHILDREN, {"ids": [r[0] for r in rows]}):
        if kind == "t":
            tags[mid][key] = text
        else:
            held[mid][key] = number
    return [
        entities.Model(
            name=r[1],
            description=r[2],
            tags=tags.get(r[0], {}),
            aliases=held.get(r[0], {}),
            latest_version=r[3],
            created_at_ms=r[4],
            updated_at_ms=r[5],
        )
        for r in rows
    ]


# ------------------------------------------------------------------ events

_EVENT_TYPES = {t.value: t for t in entities.EventType}


def event_of(r: Sequence[Any]) -> entities.Event:
    """The entity of a row of `statements.EVENTS_AFTER`."""
    return entities.Event(r[0], _EVENT_TYPES[r[1]], r[2], r[3], r[4], r[5], r[6])
