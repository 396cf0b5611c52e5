"""`tidings.server.middleware.LimitsAndMetrics`, the pure ASGI middleware of every HTTP request:
413 ``oversized`` for a declared Content-Length past the limit before the body is read,
metrics and the access log by route template (never the raw path), a failing handler counted
as 500, other scopes untouched."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import Message

from tidings.server.metrics import Metrics
from tidings.server.middleware import LimitsAndMetrics

LIMIT = 1000


def build() -> tuple[LimitsAndMetrics, Metrics]:
    app = FastAPI()

    @app.put("/v1/things/{name}")
    async def put_thing(name: str) -> dict[str, str]:
        return {"ok": name}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    metrics = Metrics()
    return LimitsAndMetrics(app, metrics=metrics, max_bytes=LIMIT, exempt={"/upload"}), metrics


def call(
    app: LimitsAndMetrics, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[list[Message], int]:
    """Run one request; returns what was sent and how often the body was read."""
    sent: list[Message] = []
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent, reads


def count(metrics: Metrics, route: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "tidings_http_requests_total", {"route": route, "status": status}
    )
    return value or 0.0


def test_a_declared_body_past_the_limit_is_refused_before_it_is_read() -> None:
    app, metrics = build()
    sent, reads = call(app, "PUT", "/v1/things/alice", [(b"content-length", b"1001")])
    assert reads == 0
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "oversized"
    assert count(metrics, "unmatched", "413") == 1
    # At the limit, and on an exempt path, the request goes through.
    sent, _ = call(app, "PUT", "/v1/things/alice", [(b"content-length", b"1000")])
    assert sent[0]["status"] == 200
    sent, _ = call(app, "PUT", "/upload", [(b"content-length", b"5000")])
    assert sent[0]["status"] == 404  # reached the app (no such route there)


def test_metrics_and_the_access_log_name_the_template_not_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, metrics = build()
    with caplog.at_level(logging.INFO, logger="tidings.access"):
        sent, _ = call(app, "PUT", "/v1/things/alice", [])
    assert sent[0]["status"] == 200
    assert count(metrics, "/v1/things/{name}", "200") == 1
    [record] = [r for r in caplog.records if r.name == "tidings.access"]
    assert (record.__dict__["route"], record.__dict__["status"]) == ("/v1/things/{name}", 200)
    assert record.__dict__["method"] == "PUT" and "alice" not in json.dumps(
        record.__dict__, default=str
    )
    latency = metrics.registry.get_sample_value(
        "tidings_http_request_seconds_count", {"route": "/v1/things/{name}"}
    )
    assert latency == 1


def test_a_failing_handler_is_counted_as_500_and_re_raised() -> None:
    app, metrics = build()
    with pytest.raises(RuntimeError):
        call(app, "GET", "/boom", [])
    assert count(metrics, "/boom", "500") == 1


def test_other_scopes_pass_untouched() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = LimitsAndMetrics(inner, metrics=Metrics(), max_bytes=LIMIT)
    for kind in ("websocket", "lifespan"):
        asyncio.run(app({"type": kind, "path": "/", "headers": []}, None, None))  # type: ignore[arg-type]
    assert seen == ["websocket", "lifespan"]
