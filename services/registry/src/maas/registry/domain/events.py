"""The append-only event log and its live fan-out.

`append` writes an event inside the caller's transaction; its id comes from
the 'events' counter row, whose lock is held to commit, so ids are committed
in order and `id > last` never skips one. `write` runs such a transaction and
hands the committed events to `EventHub.publish`: this replica's own events
are fanned out from memory when they follow the last one the hub has seen
(no read of the log per write); otherwise, and for other replicas' events,
the hub reads the log, which it also polls every interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maas.common.loops import LoopService
from maas.registry import entities
from maas.registry.db import statements
from maas.registry.db.database import Database, now_ms
from maas.registry.db.schema import EventRow

log = logging.getLogger("maas.registry.events")

PAGE = 500
T = TypeVar("T")

_APPENDED = "maas_events"  # session.info key: the events a transaction appended


_APPENDED = "maas_events"  # session.info key: the events a transaction appended


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
    conn = session.connection()
    event = entities.Event(
        id=conn.execute(statements.NEXT_EVENT_ID).scalar_one(),
        type=type_,
        model=model,
        version=version,
        alias=alias,
        previous_version=previous_version,
        created_at_ms=now_ms(),
    )
    conn.execute(
        statements.INSERT_EVENT,
        {
            "id": event.id,
            "type": type_.value,
            "model": model,
            "version": version,
            "alias": alias,
            "previous_version": previous_version,
            "created_at_ms": event.created_at_ms,
        },
    )
    session.info.setdefault(_APPENDED, []).append(event)
    return event.id


def write(db: Database, fn: Callable[[Session], T], publish: Callable[[list[entities.Event]], None]) -> T:
    """`db.write(fn)`, then hand the events `fn` appended to `publish`, once committed."""
    appended: list[entities.Event] = []

    def tx(session: Session) -> T:
        appended.clear()  # a retried attempt starts afresh
        session.info[_APPENDED] = appended
        return fn(session)

    result = db.write(tx)
    if appended:
        publish(list(appended))
    return result


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

    def publish(self, events: list[entities.Event]) -> None:
        """Thread-safe: this process committed these events (in id order)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, events)

    def _deliver(self, events: list[entities.Event]) -> None:
        if events[0].id == self._last + 1:
            self._fan_out(events)
        elif events[-1].id > self._last:
            # Something committed in between (another replica, or a write of
            # ours whose hand-over is still on its way): read the log.
            self.wake()

    async def run_once(self) -> None:
        while True:
            after = self._last
            batch = await self._in_thread(partial(self._db.read, partial(_read_after_session, after, PAGE, ())))
            # Events published from memory while the read was under way are out already.
            fresh = [event for event in batch if event.id > self._last]
            if fresh:
                self._fan_out(fresh)
            if len(batch) < PAGE:
                return

    def _fan_out(self, events: list[entities.Event]) -> None:
        self._last = events[-1].id
        for subscriber in list(self._subscribers):
            for event in events:
                try:
                    subscriber.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscriber.overflowed = True
                    break

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
