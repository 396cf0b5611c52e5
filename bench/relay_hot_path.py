"""CPU cost of pieces of the relay's hot path, in this process, µs per call, each beside what
it replaced (issue 9, "the relay's named levers"):

    PYTHONPATH=src .venv/bin/python bench/relay_hot_path.py

- WebSocket frames: reading a ``send`` frame by hand (`tidings.server.frames`) against
  ``json.loads`` + the pydantic `SendRequest` model; an ack; writing ``send_result`` as text
  against ``json.dumps``. The send frame is `bench/relay.py`'s: one device, a 1,119-byte
  RatchetMessage body in base64url.
- The embedded writer's batch (`tidings.storage.relay`): one transaction of N sends and N acks
  on an SQLite file (WAL, synchronous=FULL; CPU only, so fsync waits do not count) through
  SQLAlchemy Core on the sync driver, as the writer ran it before, and through `sqlite3`, as
  it runs now; and one `MessagingStore.pending` read (Core, as it still runs) beside the
  same query on `sqlite3`.
- Starlette's `WebSocket` per frame: ``send_text`` / ``receive`` against the raw ASGI calls
  underneath (what a raw ASGI endpoint would save per frame).
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
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message

from tidings.server.frames import read_client_frame, send_result_frame
from tidings.server.metrics import Metrics
from tidings.server.middleware import LimitsAndMetrics
from tidings.server.models import SendRequest
from tidings.storage.database import Database, apply_sqlite_pragmas, sqlite_url
from tidings.storage.messaging import _PENDING, MessagingStore, NewDevice
from tidings.storage.relay import (
    CoreStatements,
    OutgoingEnvelope,
    SqliteStatements,
    _Ack,
    _commit_batch,
    _Send,
)
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


def _sqlite_file(directory: Path) -> tuple[Path, int]:
    """A migrated SQLite file with one account (one device); returns it and the account id."""

    async def build() -> int:
        db = Database(sqlite_url(directory))
        await db.migrate()
        store = MessagingStore(db)
        device = NewDevice(
            name="d",
            registration_id=1,
            identity_key=bytes(65),
            credential_hash=bytes(32),
            signed_prekey=b"s",
            last_resort_kem_prekey=b"k",
            one_time_prekeys=[],
            kem_prekeys=[],
        )
        try:
            return await store.create_account("bench", device, 1)
        finally:
            await store.close()
            await db.close()

    return directory / "tidings.db", asyncio.run(build())


def batch_rows() -> list[tuple[str, float]]:
    from sqlalchemy import create_engine, event

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path, account = _sqlite_file(Path(tmp))
        raw = sqlite3.connect(path, isolation_level=None)
        apply_sqlite_pragmas(raw, None)
        raw.execute("PRAGMA synchronous=FULL")
        engine = create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=0)
        event.listen(
            engine,
            "connect",
            lambda c, r: (apply_sqlite_pragmas(c, r), c.execute("PRAGMA synchronous=FULL")),
        )
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        counter = iter(range(1000, 10**9))
        envelope = os.urandom(1200)

        def batch(size: int) -> tuple[list[_Send], list[_Ack]]:
            # Each batch acks what the previous one of its size stored: the queue stays small.
            ids = [next(counter).to_bytes(16, "big") for _ in range(size)]
            sends = [
                _Send(account, (OutgoingEnvelope(1, mid, envelope),), 1, 2**40, 10**6, None)  # type: ignore[arg-type]
                for mid in ids
            ]
            acks = [
                _Ack(account, 1, (int.from_bytes(mid, "big") - size).to_bytes(16, "big"), None)  # type: ignore[arg-type]
                for mid in ids
            ]
            return sends, acks

        def core(size: int) -> None:
            sends, acks = batch(size)
            with engine.begin() as conn:
                _commit_batch(CoreStatements(conn), sends, acks, {}, None, True)

        def plain(size: int) -> None:
            sends, acks = batch(size)
            raw.execute("BEGIN IMMEDIATE")
            _commit_batch(SqliteStatements(raw), sends, acks, {}, None, True)
            raw.execute("COMMIT")

        for size in (1, 16, 128):
            n = max(20, 2000 // size)
            rows.append(
                (
                    f"batch of {size} sends + {size} acks: SQLAlchemy Core",
                    per_call_us(lambda s=size: core(s), n),
                )
            )
            rows.append(
                (
                    f"batch of {size} sends + {size} acks: sqlite3",
                    per_call_us(lambda s=size: plain(s), n),
                )
            )
        params = {"account_id": account, "device_id": 1, "after_seq": 0, "now_ms": 0, "limit": 100}
        sql = (
            "SELECT id, message_id, envelope FROM messages WHERE account_id = :account_id "
            "AND device_id = :device_id AND id > :after_seq AND expires_at_ms >= :now_ms "
            "ORDER BY id LIMIT :limit"
        )

        def core_read() -> object:
            with engine.begin() as conn:
                return conn.execute(_PENDING, params).all()

        def raw_read() -> object:
            raw.execute("BEGIN")
            try:
                return raw.execute(sql, params).fetchall()
            finally:
                raw.execute("COMMIT")

        rows.append(
            ("pending read of 100 envelopes: SQLAlchemy Core", per_call_us(core_read, 2000))
        )
        rows.append(("pending read of 100 envelopes: sqlite3", per_call_us(raw_read, 2000)))
        raw.close()
        engine.dispose()
    return rows


def websocket_rows() -> list[tuple[str, float]]:
    from starlette.websockets import WebSocket, WebSocketState

    text = "y" * 1500

    async def send(message: Message) -> None:
        return None

    async def receive() -> Message:
        return {"type": "websocket.receive", "text": text}

    ws = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    ws.client_state = ws.application_state = WebSocketState.CONNECTED

    def timed(step: Callable[[], Awaitable[object]], n: int = 50_000) -> float:
        async def many() -> None:
            for _ in range(n):
                await step()

        best = float("inf")
        for _ in range(ROUNDS):
            started = time.process_time()
            asyncio.run(many())
            best = min(best, time.process_time() - started)
        return best / n * 1e6

    return [
        (
            "WebSocket frame out: raw ASGI send",
            timed(lambda: send({"type": "websocket.send", "text": text})),
        ),
        ("WebSocket frame out: Starlette WebSocket.send_text", timed(lambda: ws.send_text(text))),
        ("WebSocket frame in: raw ASGI receive", timed(receive)),
        ("WebSocket frame in: Starlette WebSocket.receive", timed(ws.receive)),
    ]


def main() -> None:
    for name, us in frame_rows() + websocket_rows() + batch_rows() + middleware_rows():
        print(f"{name:60s} {us:7.2f} µs")


if __name__ == "__main__":
    main()
