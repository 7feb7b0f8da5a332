"""The session boundary: engines, one transaction per call, error translation.

Every domain operation runs as `db.write(fn)` or `db.read(fn)` (fn gets an ORM
Session), or as `db.write_conn(fn)` or `db.read_conn(fn)` (fn gets a Core
Connection: no unit of work, for the hot paths, which pair it with
`maas.common.prepared`). Either way: one explicit transaction, retried a
bounded number of times on transient conflicts (with a rollback in between),
and database errors leave here as domain errors - a lost connection is
Unavailable, a unique violation AlreadyExists. SQLite write transactions start
with BEGIN IMMEDIATE so concurrent writers serialize on the database lock
instead of failing at commit; PostgreSQL reads are READ ONLY.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

from maas.common import errors
from maas.common.prepared import Prepared
from maas.common.retry import RetryPolicy

log = logging.getLogger("maas.sql")

T = TypeVar("T")

_WRITE = "maas_write"
_IDLE_PING_S = 5.0
# SQLite's own WAL checkpoints only past this many pages (a safety net): the
# checkpointer thread runs them long before.
_WAL_SAFETY_PAGES = 16_384
_PG_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected
# Issued on the driver by the "begin" hook (a Core execute would cost more than the BEGIN).
_BEGIN = Prepared(text("BEGIN"))
_BEGIN_IMMEDIATE = Prepared(text("BEGIN IMMEDIATE"))


def normalize_url(url: str) -> URL:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def redact(url: str | URL) -> str:
    """A URL safe to log: no password."""
    return (
        make_url(url).render_as_string(hide_password=True)
        if isinstance(url, str)
        else url.render_as_string(hide_password=True)
    )


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        busy_timeout_ms: int = 30_000,
        max_retries: int = 5,
    ) -> None:
        self.url = normalize_url(url)
        self.dialect = self.url.get_backend_name()
        self.max_retries = max_retries
        # Pauses of 5-15 ms after the first conflict, doubling up to 0.25-0.75 s.
        self._retry = RetryPolicy(attempts=max_retries + 1, initial_backoff=0.015, max_backoff=0.75, jitter=2 / 3)
        self._checkpointer: _Checkpointer | None = None
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(pool_size, busy_timeout_ms)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=connect_timeout,
                connect_args={"connect_timeout": max(1, int(connect_timeout))},
            )
            _ping_when_idle(self.engine)
        else:
            raise errors.InvalidArgument(f"unsupported database '{self.dialect}' (sqlite or postgresql)")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        # Core transactions take their kind from the engine they come from, set up once:
        # writes say so to the SQLite begin hook, PostgreSQL reads BEGIN READ ONLY.
        self._writer = self.engine.execution_options(**{_WRITE: True})
        self._reader = (
            self.engine.execution_options(postgresql_readonly=True) if self.dialect == "postgresql" else self.engine
        )

    def _sqlite_engine(self, pool_size: int, busy_timeout_ms: int) -> Engine:
        database = self.url.database
        checkpointer = None
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            checkpointer = self._checkpointer = _Checkpointer(database, busy_timeout_ms)
        engine = create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        )

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Take BEGIN out of the driver's hands; the "begin" hook below issues it.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if checkpointer is not None:
                cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_SAFETY_PAGES}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection) -> None:
            if conn.get_execution_options().get(_WRITE, False):
                _BEGIN_IMMEDIATE.execute(conn)
                if checkpointer is not None:
                    checkpointer.wrote()
            else:
                _BEGIN.execute(conn)

        return engine

    # ------------------------------------------------------------ transactions

    def write(self, fn: Callable[[Session], T]) -> T:
        return self._retrying(lambda: self._in_session(fn, write=True))

    def read(self, fn: Callable[[Session], T]) -> T:
        return self._retrying(lambda: self._in_session(fn, write=False))

    def write_conn(self, fn: Callable[[Connection], T]) -> T:
        """`fn` on a Core connection inside one write transaction (BEGIN IMMEDIATE on SQLite)."""
        return self._retrying(lambda: self._in_transaction(self._writer, fn))

    def read_conn(self, fn: Callable[[Connection], T]) -> T:
        """`fn` on a Core connection inside one read transaction (READ ONLY on PostgreSQL)."""
        return self._retrying(lambda: self._in_transaction(self._reader, fn))

    def _in_session(self, fn: Callable[[Session], T], *, write: bool) -> T:
        with self._sessions() as session:
            # On PostgreSQL a read says so in its BEGIN (READ ONLY): no extra round trip.
            readonly = not write and self.dialect == "postgresql"
            session.connection(execution_options={_WRITE: write, "postgresql_readonly": readonly})
            result = fn(session)
            session.commit()
            return result

    @staticmethod
    def _in_transaction(engine: Engine, fn: Callable[[Connection], T]) -> T:
        with engine.connect() as conn, conn.begin():
            return fn(conn)

    def _retrying(self, attempt_once: Callable[[], T]) -> T:
        """Run one transaction; again, after a rollback and a short pause, on a transient conflict."""
        try:
            return self._retry.run_sync(attempt_once, retryable=self._retryable, on_retry=_log_retry)
        except sa_exc.DBAPIError as exc:
            raise self.translate(exc) from exc
        except sa_exc.TimeoutError as exc:
            raise errors.Unavailable("database unavailable: connection pool exhausted") from exc

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A raw connection in autocommit mode, for maintenance (migrations, tests)."""
        with self.engine.connect() as conn:
            yield conn

    def _retryable(self, exc: Exception) -> bool:
        if not isinstance(exc, sa_exc.DBAPIError):
            return False
        orig = exc.orig
        if self.dialect == "postgresql":
            return getattr(orig, "sqlstate", None) in _PG_RETRYABLE
        message = str(orig).lower()
        return isinstance(orig, sqlite3.OperationalError) and ("locked" in message or "busy" in message)

    def translate(self, exc: sa_exc.DBAPIError) -> errors.MaasError | sa_exc.DBAPIError:
        """Map a driver error to a domain error; unknown ones stay as they are (INTERNAL)."""
        orig = exc.orig
        message = str(orig).lower()
        if isinstance(exc, sa_exc.IntegrityError):
            sqlstate = getattr(orig, "sqlstate", "")
            if sqlstate == "23505" or "unique constraint" in message:
                return errors.AlreadyExists("already exists")
            if sqlstate == "23503" or "foreign key" in message:
                return errors.FailedPrecondition("a referenced object does not exist or is still referenced")
            return exc
        if "database or disk is full" in message or "no space left" in message:
            return errors.ResourceExhausted("database storage is full")
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return errors.Unavailable("database unavailable")
        return exc

    # ------------------------------------------------------------------ health

    def failure_cause(self, exc: BaseException, limit: int = 300) -> str:
        """One log line saying why the database failed: the driver's own reason, without the URL or password."""
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, sa_exc.DBAPIError):
            cause = cause.__cause__ or cause.__context__
        reason = cause.orig if isinstance(cause, sa_exc.DBAPIError) and cause.orig is not None else exc
        text = " ".join(str(reason).split()) or "no reason given"
        for secret in (self.url.render_as_string(hide_password=False), self.url.password):
            if secret:
                text = text.replace(str(secret), "***")
        line = f"{type(reason).__name__}: {text}"
        return line if len(line) <= limit else line[: limit - 3] + "..."

    def probe(self) -> str | None:
        """None while the database answers; otherwise why it does not, fit for the log."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            return self.failure_cause(exc)

    def ping(self) -> bool:
        return self.probe() is None

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


class OutageLog:
    """Health of a service's database over time, logged once when an outage starts and once when it ends.

    A watchdog probes every few seconds; logging each failed probe would flood
    the log, logging none (as before) left an operator with NOT_SERVING and no
    cause. The line names the driver's reason and the setting to check.
    """

    def __init__(self, logger: logging.Logger, setting: str) -> None:
        self._log = logger
        self._setting = setting
        self._down = False

    def update(self, cause: str | None) -> bool:
        """Record one probe's result (`Database.probe`); True while the database answers."""
        if cause is not None and not self._down:
            self._log.warning(
                "database unreachable (%s); NOT_SERVING until it answers: check that the database runs "
                "and that %s points at it",
                cause,
                self._setting,
            )
        elif cause is None and self._down:
            self._log.info("database reachable again; SERVING")
        self._down = cause is not None
        return not self._down


class _Checkpointer:
    """SQLite WAL checkpoints on a thread of their own, off the request path.

    A checkpoint copies the WAL back into the database file and fsyncs it.
    Left to SQLite, it runs inside whichever commit crosses the threshold (1000
    pages): on a slow disk that commit takes tens of milliseconds, and spread
    over the commits in between it was most of the cost of a small write. Here
    the request connections only checkpoint past a high safety threshold, and
    this thread runs a PASSIVE checkpoint (never blocks readers or writers)
    once per interval while there are writes. Durability is as before: with
    synchronous=NORMAL a commit reaches the WAL, and checkpoints fsync.
    """

    def __init__(self, path: str, busy_timeout_ms: int, interval: float = 0.2) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._interval = interval
        self._dirty = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        """A write transaction began (called on its thread; cheap)."""
        self._dirty = True
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                    self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            while not self._stop.wait(self._interval):
                if self._dirty:
                    self._dirty = False
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error as exc:  # the next round tries again; SQLite's safety net stays
                        log.debug("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()


def _log_retry(exc: Exception, attempt: int, _pause: float) -> None:
    log.debug("retrying transaction after %s (attempt %d)", type(getattr(exc, "orig", exc)).__name__, attempt)


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle a while.

    pool_pre_ping costs a round trip on every checkout; a connection used a
    moment ago is alive. One that died since (a database restart) fails its
    call as Unavailable and SQLAlchemy then renews the whole pool.
    """

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["maas_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("maas_idle_since")
        if idle_since is None or time.monotonic() - idle_since < _IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # any failure means a dead connection
            raise sa_exc.DisconnectionError() from exc


def now_ms() -> int:
    return int(time.time() * 1000)


def upgrade(db: Database, script_location: str, *, lock_key: int, version_table: str = "alembic_version") -> str:
    """Apply Alembic migrations to head; returns the revision now applied.

    Several replicas may start at once against one PostgreSQL: the upgrade
    runs under a session advisory lock so exactly one applies it. The env.py
    of each migration folder reads the connection and version table from
    `config.attributes`.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", script_location)
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key})
            conn.commit()
        try:
            config.attributes["connection"] = conn
            config.attributes["version_table"] = version_table
            command.upgrade(config, "head")
            conn.commit()
        finally:
            if db.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
                conn.commit()
        current = MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()
    log.info("schema of %s at revision %s", version_table, current)
    return current or ""
