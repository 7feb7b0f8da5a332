"""Core statements compiled once per dialect and run straight on the driver.

`Connection.execute` spends ~80 µs of Python per statement on a slow core
(execution context, events, cache-key lookup, result wrapping) around ~10 µs
in the driver. The registry's hot calls run a handful of fixed statements
each, so they declare them once as `Prepared` and run them on the Core
connection's driver connection, inside its transaction: the SQL text, the
parameter order and the bind processors are worked out at first use per
dialect, and rows come back as the driver's tuples, with the driver's values
(no result processing: SQLite gives booleans as 0 and 1).

Errors go through the connection's own handling, exactly as from
`Connection.execute`: wrapped as `DBAPIError`, a lost connection invalidated
(and the pool renewed), so `maas.common.sql` retries and translates them the
same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]
_NO_PARAMS: Params = {}


@dataclass(frozen=True)
class _Form:
    """One statement as one dialect's driver takes it."""

    sql: str
    positions: tuple[str, ...] | None  # parameter order for positional styles (SQLite's qmark)
    defaults: Mapping[str, Any]  # values of the statement's own literal binds
    binds: Mapping[str, Callable[[Any], Any]]  # bind processors of the types that need one

    @classmethod
    def compile(cls, statement: ClauseElement, dialect: Dialect) -> _Form:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        binds: dict[str, Callable[[Any], Any]] = {}
        defaults: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            if bind.expanding:
                raise ValueError("Prepared statements take no expanding (IN list) parameters")
            if not bind.required:
                defaults[name] = bind.value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                binds[name] = processor
        positions = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        return cls(compiled.string, positions, defaults, binds)

    def args(self, params: Params) -> Any:
        values = {**self.defaults, **params} if self.defaults else params
        if self.binds:
            values = dict(values)
            for name, processor in self.binds.items():
                if name in values:
                    values[name] = processor(values[name])
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


class Prepared:
    """A Core statement (select, insert, update, text) run on the driver.

    Declare at module level; call `rows`/`first`/`scalar`/`execute`/`executemany`
    with a Connection inside a transaction (`Database.read_conn/write_conn`).
    Parameters are by name, as for `Connection.execute`; expanding IN lists
    are not supported (use `Connection.execute` for those).
    """

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._forms: dict[str, _Form] = {}

    def form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = _Form.compile(self.statement, dialect)
        return form

    def rows(self, conn: Connection, params: Params = _NO_PARAMS) -> list[Any]:
        """All rows, as tuples."""
        form = self.form(conn.dialect)
        rows: list[Any] = _run(conn, form.sql, form.args(params), fetch=True)
        return rows

    def first(self, conn: Connection, params: Params = _NO_PARAMS) -> Any | None:
        """The first row (a tuple), or None."""
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, params: Params = _NO_PARAMS) -> Any:
        """The first column of the first row, or None."""
        rows = self.rows(conn, params)
        return rows[0][0] if rows else None

    def execute(self, conn: Connection, params: Params = _NO_PARAMS) -> int:
        """Run a statement that returns no rows; returns the driver's rowcount."""
        form = self.form(conn.dialect)
        return _run(conn, form.sql, form.args(params), fetch=False)

    def executemany(self, conn: Connection, params: Sequence[Params]) -> None:
        """One statement, many parameter sets (batched inserts)."""
        if not params:
            return
        if len(params) == 1:  # psycopg runs executemany in pipeline mode: more round trips for one row
            self.execute(conn, params[0])
            return
        form = self.form(conn.dialect)
        _run(conn, form.sql, [form.args(p) for p in params], fetch=False, many=True)


def _run(conn: Connection, sql: str, args: Any, *, fetch: bool, many: bool = False) -> Any:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, args)
            return None
        cursor.execute(sql, args)
        return cursor.fetchall() if fetch else cursor.rowcount
    except BaseException as exc:  # noqa: BLE001 - re-raised by the handler, as Connection.execute does
        # The connection's own handling: wrap, invalidate on disconnect, events. Always raises.
        conn._handle_dbapi_exception(exc, sql, args, cursor, None)
    finally:
        cursor.close()
