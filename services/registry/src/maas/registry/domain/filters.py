"""SQL fragments shared by list queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, and_, bindparam, exists
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


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


class bytewise(FunctionElement[str]):
    """A text column compared code point by code point, as names are (case-sensitive, no locale).

    SQLite compares text that way already (BINARY); PostgreSQL compares by the
    database's collation, which in most locales orders 'Alpha' between 'al'
    and 'am' and skips punctuation, so a prefix range needs "C" there.
    """

    type = String()
    name = "bytewise"
    inherit_cache = True


@compiles(bytewise)
def _bytewise(element: bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(bytewise, "postgresql")
def _bytewise_postgresql(element: bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


def prefix_range(prefix: str) -> tuple[str, str]:
    """(from, until): a text starts with `prefix` exactly when from <= text < until, compared `bytewise`.

    A range, not LIKE: SQLite's LIKE ignores case, and a range is what an index
    on the column answers. `prefix` must be non-empty and end below U+10FFFF.
    """
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last < 0xE000:  # no text holds a surrogate: the next character is U+E000
        last = 0xE000
    return prefix, prefix[:-1] + chr(last)
