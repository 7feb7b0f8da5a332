"""Rows to entities.

Objects are read with their children in one statement (`statements.with_children`,
`statements.models_with_children`): rows of the objects themselves and of
their tags, metrics and aliases, interleaved. These functions sort them out
and build the entities straight from the driver's tuples, with the
architecture kept as the stored JSON text and the signature and lineage parsed
once per distinct text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from maas.registry import entities
from maas.registry.db.schema import lineage_from_json, signature_from_json

_STATUSES = {s.value: s for s in entities.VersionStatus}
_FORMATS = {f.value: f for f in entities.ModelFormat}
_EVENT_TYPES = {t.value: t for t in entities.EventType}

Row = Sequence[Any]

# Positions in a version row of `statements.with_children` (after the kind).
ID, NUMBER, SORT_VALUE = 1, 3, 17


def version_of(
    r: Row, tags: dict[str, str], metrics: dict[str, float], held: Sequence[str], stored: Sequence[Row] = ()
) -> entities.Version:
    """The entity of a version row of `statements.with_children` and its children."""
    primary = r[6]
    # The primary artifact first, then the others in the order they were added.
    ordered = sorted(stored, key=lambda a: (a[2] != primary, a[14], a[2]))
    return entities.Version(
        model=r[2],
        version=r[3],
        status=_STATUSES[r[4]],
        status_reason=r[5],
        format=_FORMATS[r[6]],
        architecture_json=r[7],
        signature=signature_from_json(r[8]),
        run_id=r[9] or "",
        description=r[10],
        tags=tags,
        metrics=metrics,
        size_bytes=r[11],
        sha256=r[12],
        archived=bool(r[13]),
        aliases=tuple(sorted(held)),
        created_at_ms=r[14],
        ready_at_ms=r[15],
        artifacts=tuple(entities.Artifact(_FORMATS[a[2]], a[11], a[12], a[14]) for a in ordered),
        lineage=lineage_from_json(r[16] or ""),
    )


def versions_from_rows(
    rows: Sequence[Row], key: Callable[[Row], Any] | None = None, *, reverse: bool = False
) -> tuple[list[Row], list[entities.Version]]:
    """The version rows (sorted by `key`) and their entities."""
    mains: list[Row] = []
    tags: dict[int, dict[str, str]] = {}
    metrics: dict[int, dict[str, float]] = {}
    held: dict[int, list[str]] = {}
    stored: dict[int, list[Row]] = {}
    for row in rows:
        kind = row[0]
        if kind == "v":
            mains.append(row)
        elif kind == "t":
            tags.setdefault(row[1], {})[row[2]] = row[5]
        elif kind == "m":
            metrics.setdefault(row[1], {})[row[2]] = row[SORT_VALUE]
        elif kind == "a":
            held.setdefault(row[1], []).append(row[2])
        else:
            stored.setdefault(row[1], []).append(row)
    if key is not None:
        mains.sort(key=key, reverse=reverse)
    return mains, [
        version_of(r, tags.get(r[ID], {}), metrics.get(r[ID], {}), held.get(r[ID], ()), stored.get(r[ID], ()))
        for r in mains
    ]


def version_from_rows(rows: Sequence[Row]) -> entities.Version | None:
    """The one version in the rows of a `statements.with_children` statement, or None."""
    found = versions_from_rows(rows)[1]
    return found[0] if found else None


def models_from_rows(
    rows: Sequence[Row], key: Callable[[Row], Any] | None = None
) -> tuple[list[Row], list[entities.Model]]:
    """The model rows of a `statements.models_with_children` statement (sorted by `key`) and their entities."""
    mains: list[Row] = []
    tags: dict[int, dict[str, str]] = {}
    held: dict[int, dict[str, int]] = {}
    for row in rows:
        kind = row[0]
        if kind == "m":
            mains.append(row)
        elif kind == "t":
            tags.setdefault(row[1], {})[row[2]] = row[3]
        else:
            held.setdefault(row[1], {})[row[2]] = row[4]
    if key is not None:
        mains.sort(key=key)
    return mains, [entities.Model(r[2], r[3], tags.get(r[1], {}), held.get(r[1], {}), r[4], r[5], r[6]) for r in mains]


def model_from_rows(rows: Sequence[Row]) -> entities.Model | None:
    """The one model in the rows of a `statements.models_with_children` statement, or None."""
    found = models_from_rows(rows)[1]
    return found[0] if found else None


def event_of(r: Row) -> entities.Event:
    """The entity of a row of `statements.EVENTS_AFTER`."""
    return entities.Event(r[0], _EVENT_TYPES[r[1]], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
