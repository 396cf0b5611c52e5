"""Fixtures for the client tests: a real server on a free port, in a background thread."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def server_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """(base URL, ASGI app) of one real server for the whole session."""
    from tidings.app import create_app
    from tidings.server.config import ServerConfig
    from tidings.server.serving import uvicorn_config

    # Every test registers from 127.0.0.1: lift the per-address registration limit.
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("server"), rate_registrations_per_hour=100_000
    )
    app = create_app(config)
    port = _free_port()
    server = uvicorn.Server(
        # The node's own uvicorn settings (frame limit, header timeout, no proxy headers).
        uvicorn_config(app, config, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=10)


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
