"""Shared fixtures: real databases (SQLite and PostgreSQL), real servers on port 0.

Each database backend is created and migrated once per session and emptied
before every test. PostgreSQL is required: CI starts it (.ci/run); locally set
MAAS_TEST_POSTGRES_URL to point elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import RegistryClient
from maas.common.server import RunningServer, start_server
from maas.registry.app import RegistryApp
from maas.registry.db import migrate
from maas.registry.db.database import Database
from maas.registry.db.schema import Base
from maas.registry.settings import RegistrySettings
from maas.v1 import registry_pb2_grpc
from tests.helpers import reserved_port

PG_ADMIN_URL = os.environ.get("MAAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port nothing listens on, held for the test: refused until a server of the test binds beside it."""
    with reserved_port() as port:
        yield port


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"maas_test_{uuid.uuid4().hex[:10]}"
    admin = make_url(PG_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    yield url


def empty_database(url: str) -> None:
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            if db.dialect == "postgresql":
                names = ", ".join(t.name for t in Base.metadata.sorted_tables)
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(Base.metadata.sorted_tables):
                    conn.execute(table.delete())
            conn.execute(text("INSERT INTO counters (name, value) VALUES ('events', 0)"))
    finally:
        db.dispose()


@pytest.fixture
def db_url(migrated_url: str) -> str:
    """A migrated, empty database of each backend."""
    empty_database(migrated_url)
    return migrated_url


@pytest.fixture
def backend(db_url: str) -> str:
    return make_url(db_url).get_backend_name()


def registry_settings(db_url: str, artifact_root: Path, **overrides: object) -> RegistrySettings:
    values: dict[str, object] = {
        "port": 0,
        "metrics_port": 0,
        "database_url": db_url,
        "artifact_root": artifact_root,
        "auto_migrate": False,
        "event_poll_interval": 0.05,
        "grace_seconds": 1.0,
    }
    values.update(overrides)
    return RegistrySettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def artifact_root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
async def registry(db_url: str, artifact_root: Path) -> AsyncIterator[RunningServer]:
    settings = registry_settings(db_url, artifact_root)
    running = await start_server(settings, RegistryApp(settings))
    yield running
    await running.stop(0)


@pytest.fixture
async def stub(registry: RunningServer) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:
    import grpc

    async with grpc.aio.insecure_channel(registry.address) as channel:
        yield registry_pb2_grpc.RegistryServiceStub(channel)


@pytest.fixture
async def client(registry: RunningServer) -> AsyncIterator[RegistryClient]:
    c = RegistryClient(ChannelConfig(registry.address, timeout=30))
    yield c
    await c.close()


@pytest.fixture
async def sqlite_registry(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A registry of its own (auto-migrated SQLite): trainer tests need no shared database."""
    settings = registry_settings(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts", auto_migrate=True)
    running = await start_server(settings, RegistryApp(settings))
    yield running
    await running.stop(0)
