"""SQL fragments shared by list queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists

from maas.registry import entities


def has_tags(
    owner_fk: ColumnElement[Any],
    key_col: ColumnElement[Any],
    value_col: ColumnElement[Any],
    owner_pk: ColumnElement[Any],
    filters: list[entities.TagFilter],
) -> list[ColumnElement[bool]]:
    """One EXISTS per filter: the owner must carry every tag asked for."""
    clauses: list[ColumnElement[bool]] = []
    for f in filters:
        cond = and_(owner_fk == owner_pk, key_col == f.key)
        if f.value:
            cond = and_(cond, value_col == f.value)
        clauses.append(exists().where(cond))
    return clauses
