"""Listing versions: filters, orders, keyset pages.

A page is one statement: the page's versions and their tags, metrics and
aliases (`statements.with_children`). Its shape (order, which filters, first
or later page) picks a statement built and compiled once; the values travel
as parameters. A metric order reads the versions that have the metric by
walking the (model_id, key, value) index of version_metrics, and only then
the ones that lack it, so a page does not sort the whole model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, or_, select
from sqlalchemy.engine import Connection

from maas.common import errors
from maas.common.prepared import Prepared
from maas.registry import entities
from maas.registry.db import reads
from maas.registry.db import statements as st
from maas.registry.domain import paging
from maas.registry.domain.filters import has_tags, tag_params

_Order = entities.VersionOrder


@dataclass(frozen=True)
class _Shape:
    order: entities.VersionOrder
    statuses: int  # how many statuses the filter names (0: any)
    tags: tuple[bool, ...]  # per tag filter: whether it names a value
    include_archived: bool
    after: bool  # a later page (keyset condition)
    lacking: bool = False  # metric orders: the versions without the metric


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
    params: dict[str, Any] = {"model": model, "metric": order_metric, "limit": limit + 1}
    params.update({f"status_{i}": s.value for i, s in enumerate(statuses)})
    for i, f in enumerate(tags):
        params[f"tag_key_{i}"] = f.key
        params[f"tag_value_{i}"] = f.value
    shape = _Shape(order, len(statuses), tuple(bool(f.value) for f in tags), include_archived, bool(after))

    by_metric = order in (_Order.METRIC_DESC, _Order.METRIC_ASC)
    if by_metric:
        rows, items = _by_metric(conn, shape, params, after, limit + 1)
    else:
        if after:
            params["after_number"] = _int(after, 0)
        rows, items = reads.versions_from_rows(
            _statement(shape).rows(conn, params), _number, reverse=order == _Order.NEWEST
        )
    if not rows and st.MODEL_ID.scalar(conn, {"name": model}) is None:
        raise errors.NotFound(f"model '{model}' not found")
    next_token = ""
    if len(rows) > limit:
        last = rows[limit - 1]
        number, value = last[reads.NUMBER], last[reads.SORT_VALUE]
        next_token = paging.encode([value is None, value, number] if by_metric else [number], scope)
    return entities.Page(items[:limit], next_token)


def _by_metric(
    conn: Connection, shape: _Shape, params: dict[str, Any], after: list[Any] | None, n: int
) -> tuple[list[reads.Row], list[entities.Version]]:
    """ORDER BY (metric missing), metric DESC|ASC, number DESC: those with it, then those without."""
    rows: list[reads.Row] = []
    items: list[entities.Version] = []
    was_missing = bool(after and after[0])
    if not was_missing:
        if after:
            params["after_value"], params["after_number"] = _float(after, 1), _int(after, 2)
        desc = shape.order == _Order.METRIC_DESC
        rows, items = reads.versions_from_rows(
            _statement(shape).rows(conn, params), _by_value_desc if desc else _by_value_asc, reverse=desc
        )
        if len(rows) >= n:
            return rows, items
    # Then the versions without the metric, newest first.
    lacking = _Shape(shape.order, shape.statuses, shape.tags, shape.include_archived, was_missing, lacking=True)
    if was_missing:
        params["after_number"] = _int(after, 2)
    more_rows, more_items = reads.versions_from_rows(
        _statement(lacking).rows(conn, {**params, "limit": n - len(rows)}), _number, reverse=True
    )
    return rows + more_rows, items + more_items


def _number(row: reads.Row) -> Any:
    return row[reads.NUMBER]


def _by_value_desc(row: reads.Row) -> Any:
    return row[reads.SORT_VALUE], row[reads.NUMBER]


def _by_value_asc(row: reads.Row) -> Any:
    return row[reads.SORT_VALUE], -row[reads.NUMBER]


@functools.lru_cache(maxsize=256)
def _statement(shape: _Shape) -> Prepared:
    """The page statement of a shape, with its parameters named as `page` fills them."""
    v, m, t = st.versions.c, st.version_metrics.c, st.version_tags.c
    # The model's id as a scalar subquery, so the planner can walk an index
    # in order instead of sorting the model's versions.
    model_id = select(st.models.c.id).where(st.models.c.name == bindparam("model")).scalar_subquery()
    filters: list[ColumnElement[bool]] = []
    if shape.statuses:
        filters.append(v.status.in_([bindparam(f"status_{i}") for i in range(shape.statuses)]))
    if not shape.include_archived:
        filters.append(v.archived.is_(False))
    filters += has_tags(t.version_id, t.key, t.value, v.id, tag_params(shape.tags))
    after_number: Any = bindparam("after_number")

    if shape.order in (_Order.METRIC_DESC, _Order.METRIC_ASC) and not shape.lacking:
        desc = shape.order == _Order.METRIC_DESC
        # The model is named through version_metrics.model_id only, which leaves
        # the planners one way in: the (model_id, key, value) index, walked in order.
        query = (
            st.select_versions(m.value)
            .join(st.version_metrics, v.id == m.version_id)
            .where(m.model_id == model_id, m.key == bindparam("metric"), *filters)
            .order_by(m.value.desc() if desc else m.value.asc(), v.number.desc())
        )
        if shape.after:
            # Written as a range on the value (then the tie-break), so the index seeks to it.
            value: Any = bindparam("after_value")
            if desc:
                query = query.where(m.value <= value, or_(m.value < value, v.number < after_number))
            else:
                query = query.where(m.value >= value, or_(m.value > value, v.number < after_number))
    elif shape.lacking:
        lacking = ~exists().where(m.version_id == v.id, m.key == bindparam("metric"))
        query = st.select_versions().where(v.model_id == model_id, lacking, *filters).order_by(v.number.desc())
        if shape.after:
            query = query.where(v.number < after_number)
    else:
        oldest = shape.order == _Order.OLDEST
        query = (
            st.select_versions()
            .where(v.model_id == model_id, *filters)
            .order_by(v.number.asc() if oldest else v.number.desc())
        )
        if shape.after:
            query = query.where(v.number > after_number if oldest else v.number < after_number)
    return Prepared(st.with_children(query.limit(bindparam("limit"))))


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
