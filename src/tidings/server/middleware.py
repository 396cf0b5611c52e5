"""Every HTTP request's limit, metrics and access-log line, as a pure ASGI middleware.

- A request whose ``Content-Length`` is past ``max_bytes`` is answered 413 ``oversized``
  before its body is read (paths in ``exempt``, the streamed uploads, enforce their own
  limit); a chunked body is `tidings.server.bodylimit.ChunkedBodyLimit`'s.
- ``tidings_http_requests_total`` and ``tidings_http_request_seconds`` by route *template*
  and status, and one ``tidings.access`` log line per request: the template, never the raw
  path (paths carry usernames and ids; `tidings.server.logs`). The time is taken when the
  response starts (headers sent), as before the body of a download streams.
- A request whose handler raised (answered 500 by the outermost error middleware) is counted
  and logged with status 500.

Why not ``@app.middleware("http")``: Starlette's `BaseHTTPMiddleware` runs every request in a
task group with memory streams between it and the app; this one only wraps ``send``
(`bench/relay_hot_path.py` measures both per request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.server.bodylimit import send_too_large
from tidings.server.metrics import Metrics

access_log = logging.getLogger("tidings.access")


class LimitsAndMetrics:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_bytes: int,
        exempt: Collection[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.exempt = frozenset(exempt)
        # The labelled children by (template, status): `labels()` costs ≈ 11 µs a call, a
        # dict lookup nothing, and the set is small (route templates by status codes).
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["path"] not in self.exempt and self._declared_too_large(scope):
            self._record(scope, 413, started)
            await send_too_large(send)
            return
        recorded = False

        async def send_and_record(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                self._record(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            if not recorded:
                self._record(scope, 500, started)
            raise

    def _declared_too_large(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The first one, as Starlette's Headers.get reads it; the HTTP server has
                # refused a malformed or repeated one before the app sees the request.
                return value.isdigit() and int(value) > self.max_bytes
        return False

    def _record(self, scope: Scope, status: int, started: float) -> None:
        # The router leaves the matched route in the (shared) scope.
        template = getattr(scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - started
        children = self._children.get((template, status))
        if children is None:
            children = (
                self.metrics.requests.labels(route=template, status=str(status)),
                self.metrics.latency.labels(route=template),
            )
            self._children[(template, status)] = children
        requests, latency = children
        requests.inc()
        latency.observe(elapsed)
        access_log.info(
            "request",
            extra={
                "method": scope["method"],
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
