"""Fixtures for the client tests: a real server on a free port, in a background thread."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.live import LiveServer
from tidings.server.config import ServerConfig


@pytest.fixture(scope="session")
def server_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """(base URL, ASGI app) of one real server for the whole session."""
    # Every test registers from 127.0.0.1: lift the per-address registration limit.
    # Short key-transparency epochs: a linked device is vouched for and published quickly.
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("server"), rate_registrations_per_hour=100_000,
        kt_epoch_seconds=0.5,
    )
    server = LiveServer(config).start()
    yield server.url, server.app
    server.stop()


@pytest.fixture(scope="session")
def server_url(server_app: tuple[str, Any]) -> str:
    return server_app[0]


@pytest.fixture(scope="session")
def franking_key(server_app: tuple[str, Any]) -> bytes:
    """The server's franking key (to verify report items as the provider would)."""
    key: bytes = server_app[1].state.tidings.franking_key
    return key


_counter = itertools.count()


@pytest.fixture
def names() -> Any:
    """Unique account names per test (the server is shared by the whole session)."""
    stamp = int(time.time() * 1000) % 10_000_000

    def make(prefix: str) -> str:
        return f"{prefix}{stamp}x{next(_counter)}"

    return make
