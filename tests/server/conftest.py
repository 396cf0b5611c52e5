"""Fixtures for the server tests: an app per test (fresh data directory), device kits, and
the external services of cluster mode (PostgreSQL, Redis).

Route tests run on both storage backends: the `config` fixture (and so `client`, `register`,
`link`, `live_server`) is parametrized over SQLite and PostgreSQL, each PostgreSQL test in a
fresh schema of its own. A test that inspects the SQLite files themselves is marked
``@pytest.mark.sqlite_only`` and runs on SQLite only.

External services: a test that needs one is skipped when it is unreachable, except under
``CI=true``, where an unreachable service is a failure (CI must run every variant).
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.app import make_config
from tests.support.devices import DeviceKit, link_device, register_account
from tests.support.live import LiveServer
from tests.support.services import PG_URL, REDIS_URL, pg_admin, pg_run, require_service
from tidings.app import create_app
from tidings.server.config import ServerConfig
from tidings.storage.database import Database, sqlite_url
from tidings.storage.messaging import MessagingStore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: inspects SQLite files; skip the PostgreSQL variant"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the PostgreSQL variant of ``sqlite_only`` tests (it would test nothing)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("config") == "postgresql"
        (drop if on_pg and item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def count_rows(config: ServerConfig, table: str) -> int:
    """Rows in ``table`` of the server's database, whichever backend ``config`` names."""
    if not config.database_url:
        with sqlite3.connect(config.data_dir / "tidings.db") as db:
            count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return count
    value, error = pg_run(f"SELECT count(*) FROM {table}", config.database_schema)
    assert not error, error
    assert isinstance(value, int)
    return value


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test session, dropped at the end."""
    schema = f"tidings_test_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    yield schema
    pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def redis_url() -> str:
    parsed = urllib.parse.urlsplit(REDIS_URL)
    try:
        address = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        with socket.create_connection(address, timeout=2) as s:
            s.sendall(b"PING\r\n")
            ok = s.recv(16).startswith(b"+PONG")
    except OSError:
        ok = False
    require_service("Redis", ok, REDIS_URL)
    return REDIS_URL


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this process umask (restored afterwards)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerConfig]:
    """A node configuration on SQLite, or on PostgreSQL in a schema of this test's own."""
    if request.param == "sqlite":
        yield make_config(tmp_path / "data")
        return
    session_schema = request.getfixturevalue("pg_schema")
    schema = f"{session_schema}_{secrets.token_hex(3)}"
    yield make_config(tmp_path / "data", database_url=PG_URL, database_schema=schema)
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def client(config: ServerConfig) -> Iterator[TestClient]:
    """The app over HTTP in-process, lifespan (migrations) run."""
    with TestClient(create_app(config), raise_server_exceptions=True) as c:
        yield c


@pytest.fixture
def register(client: TestClient) -> Callable[..., DeviceKit]:
    """Register a fresh account; returns its first device's kit (username and id set)."""
    counter = iter(range(1_000_000))

    def make(prefix: str = "user", **kit_args: Any) -> DeviceKit:
        return register_account(client, f"{prefix}{next(counter)}", **kit_args)

    return make


@pytest.fixture
def link(client: TestClient) -> Callable[..., DeviceKit]:
    """Link a new device to the account of ``existing``; returns the new device's kit."""

    def make(existing: DeviceKit, **kit_args: Any) -> DeviceKit:
        return link_device(client, existing, **kit_args)

    return make


@pytest.fixture
def live_server(config: ServerConfig) -> Iterator[LiveServer]:
    server = LiveServer(config).start()
    yield server
    server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessagingStore]:
    """A `MessagingStore` on a fresh SQLite file or PostgreSQL schema (closed afterwards)."""
    if request.param == "sqlite":
        db = Database(sqlite_url(tmp_path))
    else:
        schema = request.getfixturevalue("pg_schema")
        # One schema per test: the session schema name plus a suffix, dropped afterwards.
        db = Database(PG_URL, schema=f"{schema}_{os.urandom(3).hex()}")
    await db.migrate()
    await db.migrate()  # idempotent
    store = MessagingStore(db)
    try:
        yield store
    finally:
        await store.close()
        if not db.is_sqlite:
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA "{db.schema}" CASCADE')
        await db.close()
