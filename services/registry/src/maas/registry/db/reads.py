"""Bulk reads for the list calls, with Core: a page of rows, then their children in one query.

Listing through the ORM built an identity-mapped object graph per row (one
relationship load per collection) only to flatten it into entities; these
read the same data as plain tuples and build the entities directly. On
PostgreSQL every statement is a round trip, so a page costs two: its rows,
then the tags, metrics and aliases of all of them together.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Float, Select, String, Table, bindparam, literal, null, select, union_all
from sqlalchemy.engine import Connection

from maas.registry import entities
from maas.registry.db.schema import AliasRow, ModelTagRow, signature_from_json
from maas.registry.db.statements import models, runs, version_metrics, version_tags, versions

aliases = cast(Table, AliasRow.__table__)
model_tags = cast(Table, ModelTagRow.__table__)

MODEL_ID = select(models.c.id).where(models.c.name == bindparam("name"))


def _ids(column: Any) -> Any:
    return column.in_(bindparam("ids", expanding=True))


# ---------------------------------------------------------------- versions

VERSION_COLUMNS = (
    versions.c.id,
    models.c.name,
    versions.c.number,
    versions.c.status,
    versions.c.status_reason,
    versions.c.format,
    versions.c.architecture_json,
    versions.c.signature_json,
    runs.c.run_id,
    versions.c.description,
    versions.c.size_bytes,
    versions.c.sha256,
    versions.c.archived,
    versions.c.created_at_ms,
    versions.c.ready_at_ms,
)
VERSIONS_FROM = versions.join(models, versions.c.model_id == models.c.id).outerjoin(
    runs, versions.c.run_pk == runs.c.id
)
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
    for kind, vid, key, text, number in conn.execute(_VERSION_CHILDREN, {"ids": [r[0] for r in rows]}).all():
        if kind == "t":
            tags[vid][key] = text
        elif kind == "m":
            metrics[vid][key] = number
        else:
            held[vid].append(key)
    return [
        entities.Version(
            model=r[1],
            version=r[2],
            status=entities.VersionStatus(r[3]),
            status_reason=r[4],
            format=entities.ModelFormat(r[5]),
            architecture=json.loads(r[6]),
            signature=signature_from_json(r[7]),
            run_id=r[8] or "",
            description=r[9],
            tags=tags.get(r[0], {}),
            metrics=metrics.get(r[0], {}),
            size_bytes=r[10],
            sha256=r[11],
            archived=bool(r[12]),
            aliases=tuple(sorted(held.get(r[0], ()))),
            created_at_ms=r[13],
            ready_at_ms=r[14],
        )
        for r in rows
    ]


# ------------------------------------------------------------------ models

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
    for kind, mid, key, text, number in conn.execute(_MODEL_CHILDREN, {"ids": [r[0] for r in rows]}).all():
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
