"""A real server (the composed app under the node's own uvicorn settings) in a background
thread on a free local port, for tests that need real sockets (WebSocket, cluster, browser)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import uvicorn

from tidings.app import create_app
from tidings.server.config import ServerConfig
from tidings.server.serving import uvicorn_config

# How long a server may take to come up (migrations included) before the test gives up.
START_TIMEOUT_S = 20


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThreadedServer:
    """A uvicorn server in a background thread; `start` returns once it is up."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Self:
        """Start serving; returns once uvicorn reports it is up (RuntimeError if it is not
        within `START_TIMEOUT_S`)."""
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: Any, **settings: Any) -> Iterator[str]:
    """``app`` on a free port of 127.0.0.1 for the block (``settings``: more `uvicorn.Config`
    arguments); yields its base URL."""
    port = free_port()
    server = ThreadedServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **settings)
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class LiveServer(ThreadedServer):
    """The composed app of ``config`` under the node's own uvicorn settings (frame limit,
    header timeout, no proxy headers), for WebSocket and cluster tests."""

    def __init__(self, config: ServerConfig) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/websocket"
        self.app = create_app(config)
        super().__init__(
            uvicorn_config(self.app, config, host="127.0.0.1", port=self.port, log_level="warning")
        )
