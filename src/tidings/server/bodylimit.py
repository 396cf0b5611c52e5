"""A request-body ceiling for requests that carry no Content-Length (chunked transfer).

Requests with a Content-Length are refused up front by `tidings.server.middleware` when it
is too large, and the HTTP server stops them at the declared length. A chunked body has no declared
length: without this guard a JSON route would read it whole into memory. This middleware
buffers such a body up to the limit, answers 413 ``oversized`` beyond it, and otherwise
replays the buffered body to the app unchanged. Paths in ``exempt`` (streamed uploads, which
enforce their own limit) pass through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ChunkedBodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: Collection[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.exempt
            or any(name == b"content-length" for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        total = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break  # a disconnect: let the app see it
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await send_too_large(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


async def send_too_large(send: Send) -> None:
    """Answer 413 ``oversized`` (also `tidings.server.middleware`'s answer to a declared
    Content-Length past the limit)."""
    body = json.dumps(
        {"error": {"code": "oversized", "message": "request body too large"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
