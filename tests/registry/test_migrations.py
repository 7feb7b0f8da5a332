"""Migrations: a fresh database reaches head with no drift from the ORM, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from maas.registry.db import migrate
from maas.registry.db.database import Database
from maas.registry.db.schema import Base
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.conftest import BACKENDS, PG_ADMIN_URL
from tests.registry.conftest import serving


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL database, with a password in its URL that must never be printed."""
    name = f"maas_fresh_{uuid.uuid4().hex[:10]}"
    admin = make_url(PG_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        # Trust authentication ignores the password.
        yield admin.set(drivername="postgresql", database=name, password="s3cret-pw").render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database that has never been migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with fresh_postgres() as url:
        yield url


def test_upgrade_to_head_without_drift(fresh_url: str) -> None:
    db = Database(fresh_url)
    try:
        assert migrate.current(db) == ""
        assert migrate.upgrade(db) == migrate.head() != ""
        assert migrate.current(db) == migrate.head()
        assert migrate.drift(db) == []
        tables = set(inspect(db.engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
        # Running it again changes nothing.
        assert migrate.upgrade(db) == migrate.head()
        assert migrate.drift(db) == []
        with db.connection() as conn:
            assert conn.exec_driver_sql("SELECT value FROM counters WHERE name = 'events'").scalar_one() == 0
    finally:
        db.dispose()


def test_drift_detects_a_difference(fresh_url: str) -> None:
    db = Database(fresh_url)
    try:
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE stray (id INTEGER PRIMARY KEY)")
        assert migrate.drift(db) != []
    finally:
        db.dispose()


def run_migrate(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MAAS_REGISTRY_DATABASE_URL": url, "MAAS_REGISTRY_DATA_DIR": str(tmp_path / "data")}
    return subprocess.Popen(
        [sys.executable, "-m", "maas.registry", "migrate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_migrate_command(fresh_url: str, tmp_path: Path) -> None:
    proc = run_migrate(fresh_url, tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert migrate.head() in out
    assert "s3cret-pw" not in out
    db = Database(fresh_url)
    try:
        assert migrate.current(db) == migrate.head()
        assert migrate.drift(db) == []
    finally:
        db.dispose()


def test_replicas_migrating_at_once_on_postgres(tmp_path: Path) -> None:
    """Replicas share one PostgreSQL; its advisory lock serializes their migrations."""
    with fresh_postgres() as url:
        check_replicas_migrating_at_once(url, tmp_path)


def check_replicas_migrating_at_once(fresh_url: str, tmp_path: Path) -> None:
    procs = [run_migrate(fresh_url, tmp_path / str(i)) for i in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    db = Database(fresh_url)
    try:
        assert migrate.current(db) == migrate.head()
        assert migrate.drift(db) == []
    finally:
        db.dispose()


def _alembic(db: Database, action: str, revision: str) -> None:
    from alembic import command

    config = migrate._config()
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)
        conn.commit()


def test_0002_fills_version_metrics_model_id(fresh_url: str) -> None:
    """Upgrading a database that holds data: metrics of existing versions get their model."""
    db = Database(fresh_url)
    try:
        _alembic(db, "upgrade", "0001")
        with db.engine.begin() as conn:
            for model_id, name in ((1, "a"), (2, "b")):
                conn.exec_driver_sql(
                    "INSERT INTO registered_models (id, name, description, last_version, created_at_ms, updated_at_ms)"
                    f" VALUES ({model_id}, '{name}', '', 1, 0, 0)"
                )
                conn.exec_driver_sql(
                    "INSERT INTO model_versions (id, model_id, number, status, status_reason, format,"
                    " architecture_json, signature_json, description, archived, size_bytes, sha256, created_at_ms,"
                    f" ready_at_ms) VALUES ({10 + model_id}, {model_id}, 1, 'PENDING', '', 'ONNX', '{{}}', '{{}}', '',"
                    " false, 0, '', 0, 0)"
                )
                conn.exec_driver_sql(
                    f"INSERT INTO version_metrics (version_id, key, value) VALUES ({10 + model_id}, 'acc', 0.5)"
                )
        assert migrate.upgrade(db) == migrate.head()
        assert migrate.drift(db) == []
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_id, model_id FROM version_metrics ORDER BY version_id").all()
        assert [tuple(r) for r in rows] == [(11, 1), (12, 2)]
    finally:
        db.dispose()


async def test_0003_moves_metric_points_into_chunks(fresh_url: str, tmp_path: Path) -> None:
    """Points stored a row each (before 0003) read back the same, in order, after the move."""
    db = Database(fresh_url)
    try:
        _alembic(db, "upgrade", "0002")
        loss = [(step, 1000 + step % 7, step / 3) for step in range(20_000)]  # more than one chunk
        loss += [(5, 1005, 9.0), (5, 1005, 9.0), (3, 999, 1.0)]  # duplicates, late points
        acc = [(step, 2000, 0.5) for step in range(0, 100, 10)]
        with db.engine.begin() as conn:
            for pk, run_id in ((1, "a" * 32), (2, "b" * 32)):
                conn.exec_driver_sql(
                    "INSERT INTO runs (id, run_id, name, job_id, status, started_at_ms, finished_at_ms)"
                    f" VALUES ({pk}, '{run_id}', '', '', 'RUNNING', 0, 0)"
                )
            conn.execute(
                text("INSERT INTO metric_points VALUES (:r, :k, :s, :t, :v)"),
                [{"r": 1, "k": "loss", "s": s, "t": t, "v": v} for s, t, v in loss]
                + [{"r": 2, "k": "acc", "s": s, "t": t, "v": v} for s, t, v in acc],
            )
        assert migrate.upgrade(db) == migrate.head()
        assert migrate.drift(db) == []
        async with serving(fresh_url, tmp_path / "artifacts") as (_, stub):
            for run_id, key, points in (("a" * 32, "loss", loss), ("b" * 32, "acc", acc)):
                got: list[tuple[int, int, float]] = []
                token = ""
                while True:
                    resp = await stub.GetMetricHistory(
                        pb.GetMetricHistoryRequest(
                            run_id=run_id, key=key, page=common_pb2.PageRequest(page_size=7000, page_token=token)
                        )
                    )
                    s = resp.series
                    got += zip(s.steps, s.timestamps_ms, s.values, strict=True)
                    token = resp.next_page_token
                    if not token:
                        break
                assert got == sorted(points)
        # And back: the downgrade restores a row per point.
        _alembic(db, "downgrade", "0002")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM metric_points").scalar_one() == len(loss) + len(acc)
        assert migrate.upgrade(db) == migrate.head()
    finally:
        db.dispose()


async def test_0004_fails_pending_versions_an_old_database_left_behind(fresh_url: str, tmp_path: Path) -> None:
    """Versions left PENDING before 0004 count as never uploaded to: FAILED once the setting passes."""
    db = Database(fresh_url)
    try:
        _alembic(db, "upgrade", "0003")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO registered_models (id, name, description, last_version, created_at_ms, updated_at_ms)"
                " VALUES (1, 'old', '', 2, 0, 0)"
            )
            for pk, number, status, sha in ((11, 1, "READY", "a" * 64), (12, 2, "PENDING", "")):
                conn.exec_driver_sql(
                    "INSERT INTO model_versions (id, model_id, number, status, status_reason, format,"
                    " architecture_json, signature_json, description, archived, size_bytes, sha256, created_at_ms,"
                    f" ready_at_ms) VALUES ({pk}, 1, {number}, '{status}', '', 'ONNX', '{{}}', '{{}}', '',"
                    f" false, {4 if sha else 0}, '{sha}', 1000, {2000 if sha else 0})"
                )
        assert migrate.upgrade(db) == migrate.head()
        assert migrate.drift(db) == []
        async with serving(fresh_url, tmp_path / "artifacts", pending_version_seconds=1.0) as (_, stub):
            async with asyncio.timeout(30):
                while True:
                    got = await stub.GetVersion(pb.GetVersionRequest(model="old", version=2))
                    if got.status != pb.VERSION_STATUS_PENDING:
                        break
                    await asyncio.sleep(0.05)
            assert (got.status, got.status_reason) == (pb.VERSION_STATUS_FAILED, "upload abandoned")
            ready = await stub.GetVersion(pb.GetVersionRequest(model="old", version=1))
            assert (ready.status, ready.sha256) == (pb.VERSION_STATUS_READY, "a" * 64)
        # And back: the downgrade drops the column, the versions stay.
        _alembic(db, "downgrade", "0003")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM model_versions").scalar_one() == 2
    finally:
        db.dispose()


async def test_0005_lists_each_ready_versions_primary_artifact(fresh_url: str, tmp_path: Path) -> None:
    """Versions READY before 0005 have their primary artifact listed, and blob deletes see it."""
    db = Database(fresh_url)
    try:
        _alembic(db, "upgrade", "0004")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO registered_models (id, name, description, last_version, created_at_ms, updated_at_ms)"
                " VALUES (1, 'a', '', 2, 0, 0)"
            )
            for pk, number, status, sha, size in ((11, 1, "READY", "ab" * 32, 123), (12, 2, "PENDING", "", 0)):
                conn.exec_driver_sql(
                    "INSERT INTO model_versions (id, model_id, number, status, status_reason, format,"
                    " architecture_json, signature_json, description, archived, size_bytes, sha256, created_at_ms,"
                    f" ready_at_ms) VALUES ({pk}, 1, {number}, '{status}', '', 'ONNX', '{{}}', '{{}}', '',"
                    f" false, {size}, '{sha}', 1000, 5000)"
                )
        assert migrate.upgrade(db) == migrate.head()
        assert migrate.drift(db) == []
        async with serving(fresh_url, tmp_path / "artifacts") as (_, stub):
            ready = await stub.GetVersion(pb.GetVersionRequest(model="a", version=1))
            assert [(a.format, a.size_bytes, a.sha256, a.created_at.seconds) for a in ready.artifacts] == [
                (pb.MODEL_FORMAT_ONNX, 123, "ab" * 32, 5)
            ]
            assert list((await stub.GetVersion(pb.GetVersionRequest(model="a", version=2))).artifacts) == []
        _alembic(db, "downgrade", "0004")
        assert "version_artifacts" not in inspect(db.engine).get_table_names()
        assert migrate.upgrade(db) == migrate.head()
    finally:
        db.dispose()


async def test_0006_keeps_versions_without_lineage_and_stores_new_ones(fresh_url: str, tmp_path: Path) -> None:
    """Versions registered before 0006 read back with no lineage; new ones keep theirs; down and up again."""
    db = Database(fresh_url)
    try:
        _alembic(db, "upgrade", "0005")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO registered_models (id, name, description, last_version, created_at_ms, updated_at_ms)"
                " VALUES (1, 'old', '', 1, 0, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO model_versions (id, model_id, number, status, status_reason, format,"
                " architecture_json, signature_json, description, archived, size_bytes, sha256, created_at_ms,"
                " ready_at_ms) VALUES (11, 1, 1, 'READY', '', 'ONNX', '{}', '{}', 'before', false, 4,"
                f" '{'cd' * 32}', 1000, 5000)"
            )
        assert migrate.upgrade(db) == migrate.head()
        assert migrate.drift(db) == []
        lineage = pb.Lineage(source="optimize", parent=pb.VersionRef(model="old", version=1), method="quantize")
        async with serving(fresh_url, tmp_path / "artifacts") as (_, stub):
            old = await stub.GetVersion(pb.GetVersionRequest(model="old", version=1))
            assert (old.description, old.sha256, old.HasField("lineage")) == ("before", "cd" * 32, False)
            new = await stub.CreateVersion(
                pb.CreateVersionRequest(model="old", format=pb.MODEL_FORMAT_ONNX, lineage=lineage)
            )
            assert (await stub.GetVersion(pb.GetVersionRequest(model="old", version=new.version))).lineage == lineage
        _alembic(db, "downgrade", "0005")
        assert "lineage_json" not in {c["name"] for c in inspect(db.engine).get_columns("model_versions")}
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM model_versions").scalar_one() == 2
        assert migrate.upgrade(db) == migrate.head()
    finally:
        db.dispose()
