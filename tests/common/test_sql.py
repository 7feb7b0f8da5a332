"""maas.common.sql's Core-connection transactions and maas.common.prepared, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Boolean, Column, MetaData, String, Table, bindparam, insert, select, text, update

from maas.common import errors
from maas.common.prepared import Prepared
from maas.common.sql import Database

metadata = MetaData()
items = Table(
    f"sql_test_{uuid.uuid4().hex[:8]}",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(32), unique=True, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("hits", BigInteger, nullable=False),
)
c = items.c
INSERT = Prepared(insert(items).values(id=bindparam("id"), name=bindparam("name"), flag=bindparam("flag"), hits=0))
BY_NAME = Prepared(select(c.id, c.flag, c.hits).where(c.name == bindparam("name")))
HIT = Prepared(update(items).where(c.name == bindparam("name")).values(hits=c.hits + 1).returning(c.hits))
COUNT = Prepared(select(c.id).order_by(c.id))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'test.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    metadata.create_all(database.engine)
    yield database
    metadata.drop_all(database.engine)
    database.dispose()


def test_prepared_statements_round_trip(db: Database) -> None:
    def write(conn):
        INSERT.execute(conn, {"id": 1, "name": "a", "flag": True})
        INSERT.executemany(conn, [{"id": 2, "name": "b", "flag": False}])  # one row
        INSERT.executemany(conn, [{"id": i, "name": f"n{i}", "flag": False} for i in (3, 4, 5)])
        INSERT.executemany(conn, [])
        # The statement's own literal (hits + 1) needs no parameter.
        return HIT.scalar(conn, {"name": "a"}), HIT.scalar(conn, {"name": "absent"})

    assert db.write_conn(write) == (1, None)
    row = db.read_conn(lambda conn: BY_NAME.first(conn, {"name": "a"}))
    assert (row[0], bool(row[1]), row[2]) == (1, True, 1)
    assert db.read_conn(lambda conn: [r[0] for r in COUNT.rows(conn)]) == [1, 2, 3, 4, 5]
    assert db.read_conn(lambda conn: BY_NAME.first(conn, {"name": "absent"})) is None


def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    def write(conn):
        INSERT.execute(conn, {"id": 1, "name": "a", "flag": True})
        raise errors.FailedPrecondition("changed my mind")

    with pytest.raises(errors.FailedPrecondition):
        db.write_conn(write)
    assert db.read_conn(lambda conn: COUNT.rows(conn)) == []


def test_driver_errors_are_translated(db: Database) -> None:
    db.write_conn(lambda conn: INSERT.execute(conn, {"id": 1, "name": "a", "flag": True}))
    with pytest.raises(errors.AlreadyExists):
        db.write_conn(lambda conn: INSERT.execute(conn, {"id": 2, "name": "a", "flag": True}))
    # The connection that failed went back to the pool in a usable state.
    assert db.read_conn(lambda conn: len(COUNT.rows(conn))) == 1


def test_reads_are_read_only_on_postgresql(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no read-only transactions")
    show = Prepared(text("SHOW transaction_read_only"))
    assert db.read_conn(show.scalar) == "on"
    assert db.write_conn(show.scalar) == "off"


def test_concurrent_writers_serialize(db: Database) -> None:
    db.write_conn(lambda conn: INSERT.execute(conn, {"id": 1, "name": "a", "flag": True}))

    def hit() -> None:
        for _ in range(20):
            db.write_conn(lambda conn: HIT.scalar(conn, {"name": "a"}))

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.read_conn(lambda conn: BY_NAME.first(conn, {"name": "a"}))[2] == 80


def test_expanding_parameters_are_refused() -> None:
    from sqlalchemy.dialects import sqlite

    statement = Prepared(select(c.id).where(c.name.in_(bindparam("names", expanding=True))))
    with pytest.raises(ValueError):
        statement.form(sqlite.dialect())


def test_sqlite_checkpoints_off_the_request_path(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}")
    metadata.create_all(db.engine)
    try:
        for i in range(1000):
            db.write_conn(lambda conn, i=i: INSERT.execute(conn, {"id": i, "name": f"name-{i:027d}", "flag": False}))
        # SQLite itself would not checkpoint yet (its threshold is far above these writes) ...
        assert db.read_conn(Prepared(text("PRAGMA wal_autocheckpoint")).scalar) > 3 * 1000
        # ... the checkpointer thread copies the WAL into the database file within a few intervals.
        for _ in range(200):
            if path.stat().st_size > 20 * 4096:
                break
            threading.Event().wait(0.05)
        assert path.stat().st_size > 20 * 4096
    finally:
        db.dispose()
    assert not [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]


def test_an_outage_is_logged_once_with_its_cause_and_once_when_it_ends(
    postgres_url: str, held_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A watchdog probing every few seconds says why the database is gone, once, and when it is back."""
    import logging

    from sqlalchemy.engine import make_url

    from maas.common.sql import OutageLog

    down = Database(
        make_url(postgres_url).set(host="127.0.0.1", port=held_port, password="hunter2-pw").render_as_string(False),
        connect_timeout=1.0,
    )
    up = Database(postgres_url)
    logger = logging.getLogger("maas.test-outage")
    caplog.set_level(logging.INFO, logger="maas.test-outage")
    outage = OutageLog(logger, "MAAS_X_DATABASE_URL")
    try:
        assert [outage.update(down.probe()) for _ in range(3)] == [False, False, False]
        assert outage.update(up.probe()) is True
        assert outage.update(up.probe()) is True
    finally:
        down.dispose()
        up.dispose()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert str(held_port) in lines[0] and "MAAS_X_DATABASE_URL" in lines[0]  # the cause, and what to check
    assert "hunter2" not in caplog.text
    assert "again" in lines[1]
