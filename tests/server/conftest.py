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

import asyncio
import concurrent.futures
import os
import secrets
import socket
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.server.helpers import DeviceKit
from tidings.app import create_app
from tidings.server.config import ServerConfig
from tidings.server.serving import uvicorn_config

PG_URL = os.environ.get("TIDINGS_TEST_PG", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require_service(name: str, reachable: bool, detail: str = "") -> None:
    """Skip the test when ``name`` is unreachable; fail instead when ``CI=true``."""
    if reachable:
        return
    message = f"{name} is unreachable{': ' + detail if detail else ''}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: every service variant must run)")
    pytest.skip(message)


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


def _pg_run(sql: str, schema: str | None = None) -> tuple[object, str]:
    """Run one statement on the test database (in ``schema``); returns (first value of the
    first row, '') or (None, the error's class name)."""
    import asyncpg  # type: ignore[import-untyped]

    async def go() -> object:
        settings = {"search_path": schema} if schema else None
        conn = await asyncpg.connect(PG_URL, timeout=3, server_settings=settings)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    def in_thread() -> tuple[object, str]:
        # A thread of its own: the caller may be inside a running event loop (async tests).
        try:
            return asyncio.run(go()), ""
        except Exception as exc:  # any failure means "unreachable" to the caller
            return None, type(exc).__name__

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(in_thread).result()


def pg_admin(sql: str) -> str:
    """Run one statement on the test database; returns '' or the error's class name."""
    return _pg_run(sql)[1]


def count_rows(config: ServerConfig, table: str) -> int:
    """Rows in ``table`` of the server's database, whichever backend ``config`` names."""
    if not config.database_url:
        with sqlite3.connect(config.data_dir / "tidings.db") as db:
            count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return count
    value, error = _pg_run(f"SELECT count(*) FROM {table}", config.database_schema)
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


def make_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    """Limits high enough that only the rate-limit tests ever meet them."""
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "rate_registrations_per_hour": 100_000,
        "rate_prekey_fetches_per_minute": 100_000,
        "rate_sends_per_minute": 100_000,
    }
    base.update(overrides)
    return ServerConfig(**base)


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
        kit = DeviceKit(**kit_args)
        username = f"{prefix}{next(counter)}"
        response = client.post(
            "/v1/accounts", json={"username": username, "device": kit.device_keys()}
        )
        assert response.status_code == 201, response.text
        kit.username, kit.device_id = username, response.json()["device_id"]
        return kit

    return make


@pytest.fixture
def link(client: TestClient) -> Callable[..., DeviceKit]:
    """Link a new device to the account of ``existing``; returns the new device's kit."""

    def make(existing: DeviceKit, **kit_args: Any) -> DeviceKit:
        code = client.post("/v1/devices/provisioning", headers=existing.auth).json()["code"]
        kit = DeviceKit(**kit_args)
        response = client.post(
            "/v1/devices/link",
            json={"username": existing.username, "code": code, "device": kit.device_keys()},
        )
        assert response.status_code == 201, response.text
        kit.username, kit.device_id = existing.username, response.json()["device_id"]
        return kit

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """A real uvicorn server in a background thread (for WebSocket and cluster tests)."""

    def __init__(self, config: ServerConfig) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/websocket"
        self.app = create_app(config)
        # The node's own uvicorn settings (frame limit, header timeout, no proxy headers).
        self.server = uvicorn.Server(
            uvicorn_config(self.app, config, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(config: ServerConfig) -> Iterator[LiveServer]:
    server = LiveServer(config).start()
    yield server
    server.stop()
