"""Listing versions: filters, orders, keyset pages.

A metric order reads the versions that have the metric by walking the
(model_id, key, value) index of version_metrics, and only then the ones that
lack it, so a page does not sort the whole model.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, exists, null, or_, select
from sqlalchemy.engine import Connection

from maas.common import errors
from maas.registry import entities
from maas.registry.db import reads
from maas.registry.db import statements as st
from maas.registry.domain import paging
from maas.registry.domain.filters import has_tags


def page(
    conn: Connection,
    model: str,
    *,
    statuses: list[entities.VersionStatus],
    tags: list[entities.TagFilter],
    order: entities.VersionOrder,
    order_metric: str,
    include_archived: bool,
    limit: int,
    after: list[Any] | None,
    scope: str,
) -> entities.Page[entities.Version]:
    v = st.versions.c
    # The model's id as a scalar subquery, so the planner can walk an index
    # in order instead of sorting the model's versions.
    model_id = select(st.models.c.id).where(st.models.c.name == model).scalar_subquery()
    filters: list[ColumnElement[bool]] = []
    if statuses:
        filters.append(v.status.in_([status.value for status in statuses]))
    if not include_archived:
        filters.append(v.archived.is_(False))
    t = st.version_tags.c
    filters += has_tags(t.version_id, t.key, t.value, v.id, tags)

    by_metric = order in (entities.VersionOrder.METRIC_DESC, entities.VersionOrder.METRIC_ASC)
    if by_metric:
        desc = order == entities.VersionOrder.METRIC_DESC
        rows = _by_metric(conn, model_id, filters, order_metric, desc, after, limit + 1)
    else:
        rows = _by_number(
            conn, [v.model_id == model_id, *filters], order == entities.VersionOrder.OLDEST, after, limit + 1
        )
    if not rows and st.MODEL_ID.scalar(conn, {"name": model}) is None:
        raise errors.NotFound(f"model '{model}' not found")
    more = len(rows) > limit
    rows = rows[:limit]
    items = reads.versions_of(conn, rows)
    next_token = ""
    if more:
        number, value = rows[-1][2], rows[-1][-1]
        next_token = paging.encode([value is None, value, number] if by_metric else [number], scope)
    return entities.Page(items, next_token)


def _by_number(
    conn: Connection, filters: list[ColumnElement[bool]], oldest: bool, after: list[Any] | None, n: int
) -> list[Any]:
    v = st.versions.c
    query = reads.select_versions().where(*filters).limit(n)
    if oldest:
        query = query.order_by(v.number.asc())
        if after:
            query = query.where(v.number > _int(after, 0))
    else:
        query = query.order_by(v.number.desc())
        if after:
            query = query.where(v.number < _int(after, 0))
    return list(conn.execute(query).all())


def _by_metric(
    conn: Connection,
    model_id: Any,
    filters: list[ColumnElement[bool]],
    key: str,
    desc: bool,
    after: list[Any] | None,
    n: int,
) -> list[Any]:
    """ORDER BY (metric missing), metric DESC|ASC, number DESC: those with it, then those without.

    Rows end with the metric's value (None for the ones without it). The model
    is named through version_metrics.model_id only, which leaves the planners
    one way in: the (model_id, key, value) index, walked in order.
    """
    v, m = st.versions.c, st.version_metrics.c
    rows: list[Any] = []
    was_missing = bool(after and after[0])
    if not was_missing:
        query = (
            reads.select_versions(m.value)
            .join(st.version_metrics, v.id == m.version_id)
            .where(m.model_id == model_id, m.key == key, *filters)
            .order_by(m.value.desc() if desc else m.value.asc(), v.number.desc())
            .limit(n)
        )
        if after:
            last_value, last_number = _float(after, 1), _int(after, 2)
            # Written as a range on the value (then the tie-break), so the index seeks to it.
            if desc:
                query = query.where(m.value <= last_value, or_(m.value < last_value, v.number < last_number))
            else:
                query = query.where(m.value >= last_value, or_(m.value > last_value, v.number < last_number))
        rows = list(conn.execute(query).all())
        if len(rows) == n:
            return rows
    lacking = ~exists().where(m.version_id == v.id, m.key == key)
    query = (
        reads.select_versions(null())
        .where(v.model_id == model_id, lacking, *filters)
        .order_by(v.number.desc())
        .limit(n - len(rows))
    )
    if was_missing:
        query = query.where(v.number < _int(after, 2))
    return rows + list(conn.execute(query).all())


def _int(after: list[Any] | None, i: int) -> int:
    try:
        return int(after[i])  # type: ignore[index]
    except (IndexError, TypeError, ValueError) as exc:
        raise errors.InvalidArgument("page_token: invalid") from exc


def _float(after: list[Any] | None, i: int) -> float:
    try:
        return float(after[i])  # type: ignore[index]
    except (IndexError, TypeError, ValueError) as exc:
        raise errors.InvalidArgument("page_token: invalid") from exc
