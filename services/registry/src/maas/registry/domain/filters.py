"""SQL fragments shared by list queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, exists


def tag_params(valued: Sequence[bool]) -> list[tuple[Any, Any]]:
    """(key, value) bind parameters tag_key_i / tag_value_i for `has_tags`; value None when any value will do."""
    return [
        (bindparam(f"tag_key_{i}"), bindparam(f"tag_value_{i}") if has_value else None)
        for i, has_value in enumerate(valued)
    ]


def has_tags(
    owner_fk: ColumnElement[Any],
    key_col: ColumnElement[Any],
    value_col: ColumnElement[Any],
    owner_pk: ColumnElement[Any],
    wanted: Sequence[tuple[Any, Any]],
) -> list[ColumnElement[bool]]:
    """One EXISTS per (key, value) wanted: the owner must carry every tag asked for."""
    clauses: list[ColumnElement[bool]] = []
    for key, value in wanted:
        cond = and_(owner_fk == owner_pk, key_col == key)
        if value is not None:
            cond = and_(cond, value_col == value)
        clauses.append(exists().where(cond))
    return clauses
