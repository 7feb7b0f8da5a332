"""The append-only event log and its live fan-out.

A write transaction appends events through its `Log`; an id comes from the
'events' counter row, whose lock is held to commit, so ids are committed in
order and `id > last` never skips one. `write` runs such a transaction and
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

from sqlalchemy.engine import Connection

from maas.common.loops import LoopService
from maas.registry import entities
from maas.registry.db import reads
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms

log = logging.getLogger("maas.registry.events")

PAGE = 500
T = TypeVar("T")


class Log:
    """The events of one write transaction."""

    __slots__ = ("_conn", "_one_statement", "events")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # On PostgreSQL an event is one statement (a round trip saved); SQLite runs two.
        self._one_statement = conn.dialect.name == "postgresql"
        self.events: list[entities.Event] = []

    def append(
        self,
        type_: entities.EventType,
        model: str,
        *,
        version: int = 0,
        alias: str = "",
        previous_version: int = 0,
        deployment: str = "",
        generation: int = 0,
    ) -> int:
        """Add an event to the transaction. Call it last: it takes the counter lock."""
        ts = now_ms()
        row = {
            "type": type_.value,
            "model": model,
            "version": version,
            "alias": alias,
            "previous_version": previous_version,
            "created_at_ms": ts,
            "deployment": deployment,
            "generation": generation,
        }
        if self._one_statement:
            event_id = st.APPEND_EVENT_PG.scalar(self._conn, row)
        else:
            event_id = st.NEXT_EVENT_ID.scalar(self._conn)
            st.INSERT_EVENT.execute(self._conn, {"id": event_id, **row})
        return self.added(
            entities.Event(event_id, type_, model, version, alias, previous_version, ts, deployment, generation)
        )

    def added(self, event: entities.Event) -> int:
        """Record an event that a statement of the transaction wrote itself."""
        self.events.append(event)
        return event.id


def write(db: Database, fn: Callable[[Connection, Log], T], publish: Callable[[list[entities.Event]], None]) -> T:
    """`db.write_conn(fn)` with a Log; the events `fn` appended go to `publish` once committed."""
    committed: list[entities.Event] = []

    def tx(conn: Connection) -> T:
        events = Log(conn)
        result = fn(conn, events)
        committed[:] = events.events  # a retried attempt replaces what a failed one appended
        return result

    result = db.write_conn(tx)
    if committed:
        publish(committed)
    return result


def read_after(conn: Connection, after_id: int, limit: int = PAGE, models: Iterable[str] = ()) -> list[entities.Event]:
    names = list(models)
    if names:
        rows: Iterable[Any] = conn.execute(
            st.EVENTS_AFTER_FOR_MODELS, {"after": after_id, "limit": limit, "models": names}
        )
    else:
        rows = st.EVENTS_AFTER.rows(conn, {"after": after_id, "limit": limit})
    return [reads.event_of(r) for r in rows]


def _read_after_conn(after_id: int, limit: int, models: Iterable[str], conn: Connection) -> list[entities.Event]:
    return read_after(conn, after_id, limit, models)


def last_id(conn: Connection) -> int:
    return int(st.LAST_EVENT_ID.scalar(conn))


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[entities.Event] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False


@dataclass(frozen=True)
class EventFilter:
    models: frozenset[str] = frozenset()
    types: frozenset[entities.EventType] = frozenset()
    deployments: frozenset[str] = frozenset()

    def matches(self, event: entities.Event) -> bool:
        return (
            (not self.models or event.model in self.models)
            and (not self.types or event.type in self.types)
            and (not self.deployments or event.deployment in self.deployments)
        )


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
        self._last = await self._in_thread(lambda: self._db.read_conn(last_id))

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
            batch = await self._in_thread(partial(self._db.read_conn, partial(_read_after_conn, after, PAGE, ())))
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
                after_id = await self._in_thread(lambda: self._db.read_conn(last_id))
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
            batch = await self._in_thread(partial(self._db.read_conn, partial(_read_after_conn, start, PAGE, models)))
            for event in batch:
                cursor = event.id
                if filt.matches(event):
                    yield event
            if len(batch) < PAGE:
                return

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
