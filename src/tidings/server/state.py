"""Everything a request handler needs, built once per app by `tidings.app.create_app` and
handed to routes by dependency injection (`get_state`), never through module globals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from tidings.clock import now_ms
from tidings.crypto.franking import SERVER_FRANKING_KEY_LEN
from tidings.server.config import ServerConfig
from tidings.server.hub import LocalHub
from tidings.server.metrics import Metrics
from tidings.server.ratelimit import RateLimiter
from tidings.server.relay import NodeCache
from tidings.storage.blobs import AttachmentStore
from tidings.storage.database import Database
from tidings.storage.files import FRANKING_KEY_FILE, load_key_file
from tidings.storage.messaging import MessagingStore


@dataclass
class ServerState:
    config: ServerConfig
    db: Database
    store: MessagingStore
    hub: LocalHub
    limiter: RateLimiter
    metrics: Metrics
    franking_key: bytes = field(repr=False)
    attachments: AttachmentStore
    """Where attachment ciphertext lives: local disk or S3 (`app.build_attachment_store`)."""
    clock: Callable[[], int] = now_ms
    cache: NodeCache = field(default_factory=lambda: NodeCache(ttl_s=10.0))
    """Credentials, enforcement and device lists of this node, invalidated through the hub."""
    websockets_open: dict[int, int] = field(default_factory=dict)
    """Open WebSocket connections per account id on this node (for the per-account limit)."""
    preserved_attachments: Callable[[str], set[str]] = lambda _account: set()
    """Attachment ids of an account that a preservation hold keeps: account deletion leaves
    their bytes in the store (`tidings.safety.holds`; set by the composition root)."""


def get_state(request: HTTPConnection) -> ServerState:
    state: ServerState = request.app.state.tidings
    return state


async def state_dependency(request: HTTPConnection) -> ServerState:
    """`get_state` as a FastAPI dependency. A coroutine on purpose: FastAPI runs a plain
    function dependency in its thread pool, a thread hop (two context switches and an event
    loop wake-up) on every request for a dict lookup (`bench/http_send.py`)."""
    return get_state(request)


StateDep = Annotated["ServerState", Depends(state_dependency)]
"""Route parameter type: the app's `ServerState`."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def load_franking_key(config: ServerConfig) -> bytes:
    """The server franking key from ``config.franking_key_file`` (default
    ``<data_dir>/franking.key``), created on first start with mode 0600 (atomically: a crash
    never leaves a short key file behind).

    Raises:
        InvalidKeyError: the file exists but does not hold exactly 32 bytes.
        OSError: the file cannot be created or read.
    """
    path = config.franking_key_file or config.data_dir / FRANKING_KEY_FILE
    return load_key_file(path, SERVER_FRANKING_KEY_LEN)
