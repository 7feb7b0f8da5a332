"""The append-only event log and its live fan-out.

`append` writes an event inside the caller's transaction; its id comes from
the 'events' counter row, whose lock is held to commit, so ids are committed
in order and `id > last` never skips one. `EventHub` polls the log (this
replica's own writes wake it at once; other replicas' are seen within the
poll interval) and fans new events out to every WatchEvents stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from maas.common.loops import LoopService
from maas.registry import entities
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import CounterRow, EventRow

log = logging.getLogger("maas.registry.events")

PAGE = 500


def append(
    session: Session,
    type_: entities.EventType,
    model: str,
    *,
    version: int = 0,
    alias: str = "",
    previous_version: int = 0,
) -> int:
    """Add an event to the caller's transaction. Call it last: it takes the counter lock."""
    event_id = session.execute(
        update(CounterRow)
        .where(CounterRow.name == "events")
        .values(value=CounterRow.value + 1)
        .returning(CounterRow.value)
    ).scalar_one()
    session.add(
        EventRow(
            id=event_id,
            type=type_.value,
            model=model,
            version=version,
            alias=alias,
            previous_version=previous_version,
            created_at_ms=now_ms(),
        )
    )
    return event_id


def read_after(session: Session, after_id: int, limit: int = PAGE, models: Iterable[str] = ()) -> list[entities.Event]:
    query = select(EventRow).where(EventRow.id > after_id).order_by(EventRow.id).limit(limit)
    names = list(models)
    if names:
        query = query.where(EventRow.model.in_(names))
    return [row.to_entity() for row in session.scalars(query)]


def _read_after_session(after_id: int, limit: int, models: Iterable[str], session: Session) -> list[entities.Event]:
    return read_after(session, after_id, limit, models)


def last_id(session: Session) -> int:
    return int(session.execute(select(func.coalesce(func.max(EventRow.id), 0))).scalar_one())


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[entities.Event] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False


@dataclass(frozen=True)
class EventFilter:
    models: frozenset[str] = frozenset()
    types: frozenset[entities.EventType] = frozenset()

    def matches(self, event: entities.Event) -> bool:
        return (not self.models or event.model in self.models) and (not self.types or event.type in self.types)


class EventHub(LoopService):
    name = "event-hub"

    def __init__(self, db: Database, executor: Executor, interval: float) -> None:
        super().__init__(interval)
        self._db = db
        self._executor = executor
        self._subscribers: set[_Subscriber] = set()
        self._last = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def prime(self) -> None:
        """Start from the newest event: the hub only fans out what comes next."""
        self._loop = asyncio.get_running_loop()
        self._last = await self._in_thread(lambda: self._db.read(last_id))

    def poke(self) -> None:
        """Thread-safe: this process committed an event; look now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.wake)

    async def run_once(self) -> None:
        while True:
            after = self._last
            batch = await self._in_thread(partial(self._db.read, partial(_read_after_session, after, PAGE, ())))
            if not batch:
                return
            self._last = batch[-1].id
            for subscriber in list(self._subscribers):
                for event in batch:
                    try:
                        subscriber.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        subscriber.overflowed = True
                        break
            if len(batch) < PAGE:
                return

    async def watch(self, after_id: int, from_latest: bool, filt: EventFilter) -> AsyncIterator[entities.Event]:
        """Past events after `after_id`, then live ones; no gap, no duplicate."""
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        try:
            if from_latest:
                after_id = await self._in_thread(lambda: self._db.read(last_id))
            sent = after_id
            while True:
                # Catch up from the log; the subscription already buffers what comes next.
                async for event in self._replay(sent, filt):
                    sent = event.id
                    yield event
                subscriber.overflowed = False
                while not subscriber.overflowed:
                    event = await subscriber.queue.get()
                    if event.id <= sent:
                        continue
                    sent = event.id
                    if filt.matches(event):
                        yield event
                # This stream fell behind and the hub dropped events for it:
                # discard the queue and catch up from the log again.
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
        finally:
            self._subscribers.discard(subscriber)

    async def _replay(self, after_id: int, filt: EventFilter) -> AsyncIterator[entities.Event]:
        cursor = after_id
        models = sorted(filt.models)
        while True:
            start = cursor
            batch = await self._in_thread(partial(self._db.read, partial(_read_after_session, start, PAGE, models)))
            for event in batch:
                cursor = event.id
                if filt.matches(event):
                    yield event
            if len(batch) < PAGE:
                return

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
