"""Everything a request handler needs, built once per app by `tidings.app.create_app` and
handed to routes by dependency injection (`get_state`), never through module globals."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from tidings.clock import now_ms
from tidings.server.config import ServerConfig
from tidings.server.hub import LocalHub
from tidings.server.metrics import Metrics
from tidings.server.ratelimit import RateLimiter
from tidings.server.relay import NodeCache
from tidings.storage.database import Database
from tidings.storage.files import write_private
from tidings.storage.messaging import MessagingStore

FRANKING_KEY_LEN = 32


@dataclass
class ServerState:
    config: ServerConfig
    db: Database
    store: MessagingStore
    hub: LocalHub
    limiter: RateLimiter
    metrics: Metrics
    franking_key: bytes = field(repr=False)
    attachments_dir: Path
    clock: Callable[[], int] = now_ms
    cache: NodeCache = field(default_factory=lambda: NodeCache(ttl_s=10.0))
    """Credentials, enforcement and device lists of this node, invalidated through the hub."""
    websockets_open: dict[int, int] = field(default_factory=dict)
    """Open WebSocket connections per account id on this node (for the per-account limit)."""


def get_state(request: HTTPConnection) -> ServerState:
    state: ServerState = request.app.state.tidings
    return state


StateDep = Annotated["ServerState", Depends(get_state)]
"""Route parameter type: the app's `ServerState`."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def load_franking_key(path: Path) -> bytes:
    """The server franking key, created on first start with mode 0600 (atomically: a crash
    never leaves a short key file behind).

    Raises:
        OSError: the file cannot be created or read.
        ValueError: the file exists but does not hold exactly 32 bytes.
    """
    if not path.exists():
        write_private(path, os.urandom(FRANKING_KEY_LEN), create_only=True)
    key = path.read_bytes()
    if len(key) != FRANKING_KEY_LEN:
        raise ValueError(f"{path} must hold exactly {FRANKING_KEY_LEN} bytes")
    return key
