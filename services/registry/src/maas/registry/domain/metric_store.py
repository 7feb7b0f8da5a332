"""Metric points stored column-wise, in chunks of one key's points.

A database row (and an index entry) per point made both ingestion and
history reads cost a row each. A chunk holds up to CHUNK_POINTS points of
one (run, key), sorted by (step, timestamp, value) and packed as
little-endian int64 / float64 arrays, with its step range in plain columns.
Ingesting a batch is one row per CHUNK_POINTS points; a history page reads
the chunks its step range overlaps and merges them, which is a plain
concatenation in the usual case (steps only grow, so chunks do not overlap).
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice, pairwise
from operator import lt
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection

from maas.registry.db.schema import metric_chunks

CHUNK_POINTS = 16_384
_SWAP = sys.byteorder != "little"
_c = metric_chunks.c

_INSERT = insert(metric_chunks)
_DATA = select(_c.id, _c.step_data, _c.timestamp_data, _c.value_data).where(_c.id.in_(bindparam("ids", expanding=True)))


def _pack(typecode: str, items: Sequence[Any]) -> bytes:
    data = array(typecode, items)
    if _SWAP:
        data.byteswap()
    return data.tobytes()


def _unpack(typecode: str, raw: bytes) -> list[Any]:
    data = array(typecode)
    data.frombytes(raw)
    if _SWAP:
        data.byteswap()
    return data.tolist()


@dataclass
class Points:
    """Column-wise points, sorted by (step, timestamp, value)."""

    steps: list[int]
    stamps: list[int]
    values: list[float]

    @staticmethod
    def sorted_from(steps: list[int], stamps: list[int], values: list[float]) -> Points:
        if all(map(lt, steps, islice(steps, 1, None))):  # strictly growing steps: already in order
            return Points(steps, stamps, values)
        ordered = sorted(zip(steps, stamps, values, strict=True))
        return Points([p[0] for p in ordered], [p[1] for p in ordered], [p[2] for p in ordered])


def write(conn: Connection, run_pk: int, key: str, points: Points) -> None:
    rows = []
    for start in range(0, len(points.steps), CHUNK_POINTS):
        steps = points.steps[start : start + CHUNK_POINTS]
        rows.append(
            {
                "run_pk": run_pk,
                "key": key,
                "first_step": steps[0],
                "last_step": steps[-1],
                "points": len(steps),
                "step_data": _pack("q", steps),
                "timestamp_data": _pack("q", points.stamps[start : start + CHUNK_POINTS]),
                "value_data": _pack("d", points.values[start : start + CHUNK_POINTS]),
            }
        )
    if rows:
        conn.execute(_INSERT, rows)


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after `skip` points at exactly (step, stamp)."""

    step: int
    stamp: int
    skip: int


@dataclass
class Page:
    points: Points
    more: bool


def read(
    conn: Connection,
    run_pk: int,
    key: str,
    *,
    min_step: int | None,
    max_step: int | None,
    after: Cursor | None,
    limit: int,
) -> Page:
    """Up to `limit` points of the step range, from `after` on, in order."""
    lower = max(v for v in (min_step, after.step if after else None, -(2**63)) if v is not None)
    query = (
        select(_c.id, _c.first_step, _c.last_step, _c.points)
        .where(_c.run_pk == run_pk, _c.key == key, _c.last_step >= lower)
        .order_by(_c.first_step, _c.id)
    )
    if max_step is not None:
        query = query.where(_c.first_step <= max_step)
    chunks = list(conn.execute(query).all())
    wanted = limit + 1 + (after.skip if after else 0)
    loaded: list[tuple[int, int, Points]] = []  # first_step, last_step, points
    taken = 0
    while True:
        batch: list[Any] = []
        budget = 0
        while taken < len(chunks) and (not batch or budget < wanted):
            batch.append(chunks[taken])
            budget += chunks[taken][3]
            taken += 1
        if batch:
            data = {row[0]: row[1:] for row in conn.execute(_DATA, {"ids": [c[0] for c in batch]}).all()}
            for chunk_id, first, last, _ in batch:
                raw_steps, raw_stamps, raw_values = data[chunk_id]
                loaded.append(
                    (first, last, Points(_unpack("q", raw_steps), _unpack("q", raw_stamps), _unpack("d", raw_values)))
                )
        # Points below the next unread chunk's first step are final.
        frontier = chunks[taken][1] if taken < len(chunks) else None
        merged = _merge(loaded)
        final = len(merged.steps) if frontier is None else bisect_left(merged.steps, frontier)
        begin = _start(merged, lower, after)
        end = final if max_step is None else min(final, bisect_right(merged.steps, max_step))
        if end - begin > limit or frontier is None:
            page = Points(merged.steps[begin:end], merged.stamps[begin:end], merged.values[begin:end])
            more = len(page.steps) > limit
            if more:
                page = Points(page.steps[:limit], page.stamps[:limit], page.values[:limit])
            return Page(page, more)


def _merge(loaded: list[tuple[int, int, Points]]) -> Points:
    if len(loaded) == 1:
        return loaded[0][2]
    disjoint = all(a[1] < b[0] for a, b in pairwise(loaded))
    steps: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    for _, _, points in loaded:
        steps += points.steps
        stamps += points.stamps
        values += points.values
    return Points(steps, stamps, values) if disjoint else Points.sorted_from(steps, stamps, values)


def _start(points: Points, lower: int, after: Cursor | None) -> int:
    """Index of the first point at or above `lower` and past the cursor."""
    begin = bisect_left(points.steps, lower)
    if after is None:
        return begin
    steps, stamps = points.steps, points.stamps
    while begin < len(steps) and steps[begin] == after.step and stamps[begin] < after.stamp:
        begin += 1
    skipped = 0
    while skipped < after.skip and begin < len(steps) and steps[begin] == after.step and stamps[begin] == after.stamp:
        begin += 1
        skipped += 1
    return begin
