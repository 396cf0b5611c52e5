"""A real server (the composed app under the node's own uvicorn settings) in a background
thread on a free local port, for tests that need real sockets (WebSocket, cluster, browser)."""

from __future__ import annotations

import socket
import threading
import time

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
        """Start serving; returns once uvicorn reports it is up (RuntimeError if it does not)."""
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
