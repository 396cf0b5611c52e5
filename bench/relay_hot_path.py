"""CPU cost of pieces of the relay's hot path, in this process, µs per call, each beside what
it replaced (issue 9, "the relay's named levers"):

    PYTHONPATH=src .venv/bin/python bench/relay_hot_path.py

- WebSocket frames: reading a ``send`` frame by hand (`tidings.server.frames`) against
  ``json.loads`` + the pydantic `SendRequest` model; an ack; writing ``send_result`` as text
  against ``json.dumps``. The send frame is `bench/relay.py`'s: one device, a 1,119-byte
  RatchetMessage body in base64url.
- HTTP middleware: one request through a one-route FastAPI app bare, behind Starlette's
  `BaseHTTPMiddleware` running the dispatch `tidings.app` had (copied below for the
  comparison), and behind the pure ASGI `tidings.server.middleware.LimitsAndMetrics`.

CPU time (``time.process_time``), best of 5 rounds, so other tenants of the machine mostly
show as noise rather than as a slower figure."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message

from tidings.server.frames import read_client_frame, send_result_frame
from tidings.server.metrics import Metrics
from tidings.server.middleware import LimitsAndMetrics
from tidings.server.models import SendRequest
from tidings.wire.base64url import b64e

ROUNDS = 5
LIMIT = 2 * 1024 * 1024


def per_call_us(fn: Callable[[], object], n: int = 20_000) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - started)
    return best / n * 1e6


def frame_rows() -> list[tuple[str, float]]:
    message = {
        "device_id": 1,
        "registration_id": 12345,
        "type": 2,
        "body": b64e(os.urandom(1119)),
        "commitment": b64e(os.urandom(32)),
    }
    send = json.dumps({"type": "send", "id": 17, "destination": "bob", "messages": [message]})
    ack = json.dumps({"type": "ack", "message_id": b64e(os.urandom(16))})
    ids = [b64e(os.urandom(16))]

    def general_send() -> object:
        frame = json.loads(send)
        return SendRequest.model_validate({"messages": frame.get("messages")})

    def general_result() -> object:
        reply = {"type": "send_result", "id": 17, "server_timestamp_ms": 1, "message_ids": ids}
        return json.dumps(reply)

    return [
        ("read a send frame: json.loads + pydantic SendRequest", per_call_us(general_send)),
        (
            "read a send frame: frames.read_client_frame",
            per_call_us(lambda: read_client_frame(send)),
        ),
        (
            "read an ack frame: frames.read_client_frame",
            per_call_us(lambda: read_client_frame(ack)),
        ),
        ("write send_result: json.dumps", per_call_us(general_result)),
        (
            "write send_result: frames.send_result_frame",
            per_call_us(lambda: send_result_frame(17, 1, ids)),
        ),
    ]


def _app() -> FastAPI:
    app = FastAPI()

    @app.put("/v1/messages/{username}")
    async def put(username: str) -> Response:
        return Response(b"{}", media_type="application/json")

    return app


def _base_http_middleware(app: FastAPI, metrics: Metrics) -> ASGIApp:
    """The ``@app.middleware("http")`` dispatch `tidings.app` had before the pure one."""
    access_log = logging.getLogger("tidings.access")

    async def dispatch(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if (
            request.url.path != "/v1/attachments"
            and length is not None
            and length.isdigit()
            and int(length) > LIMIT
        ):
            response: Response = JSONResponse(status_code=413, content={"error": "oversized"})
        else:
            response = await call_next(request)
        template = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - started
        metrics.requests.labels(route=template, status=str(response.status_code)).inc()
        metrics.latency.labels(route=template).observe(elapsed)
        access_log.info("request", extra={"method": request.method, "route": template})
        return response

    return BaseHTTPMiddleware(app, dispatch=dispatch)


def _requests_us(app: ASGIApp, n: int = 3000) -> float:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": "/v1/messages/bob",
        "raw_path": b"/v1/messages/bob",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", b"2"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        return None

    async def many() -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        asyncio.run(many())
        best = min(best, time.process_time() - started)
    return best / n * 1e6


def middleware_rows() -> list[tuple[str, float]]:
    logging.getLogger("tidings.access").disabled = True  # formatting is the same in both
    return [
        ("HTTP request, no middleware", _requests_us(_app())),
        (
            "HTTP request, BaseHTTPMiddleware (the old dispatch)",
            _requests_us(_base_http_middleware(_app(), Metrics())),
        ),
        (
            "HTTP request, LimitsAndMetrics (pure ASGI)",
            _requests_us(LimitsAndMetrics(_app(), metrics=Metrics(), max_bytes=LIMIT)),
        ),
    ]


def main() -> None:
    for name, us in frame_rows() + middleware_rows():
        print(f"{name:60s} {us:7.2f} µs")


if __name__ == "__main__":
    main()
