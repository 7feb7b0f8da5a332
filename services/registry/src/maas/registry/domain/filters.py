"""SQL fragments shared by list queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists
from sqlalchemy.orm import InstrumentedAttribute

from maas.registry import entities


def has_tags(
    owner_fk: InstrumentedAttribute[Any],
    key_col: InstrumentedAttribute[str],
    value_col: InstrumentedAttribute[str],
    owner_pk: InstrumentedAttribute[int],
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
