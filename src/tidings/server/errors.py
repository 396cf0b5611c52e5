"""How typed errors become HTTP answers: a status per error class, and a JSON body
``{"error": {"code", "message", ...details}}`` (docs/api.md)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from tidings import errors as e
from tidings.server.metrics import Metrics


def status_of(kind: type[e.TidingsError]) -> int:
    """The HTTP status of errors of class ``kind``: `tidings.errors.http_status`, the one
    table the console uses too (400 unless it says otherwise)."""
    return e.http_status(kind)


def status_for(exc: e.TidingsError) -> int:
    return status_of(type(exc))


def body_for(exc: e.TidingsError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, e.MismatchedDevicesError):
        error.update(missing=exc.missing, extra=exc.extra)
    elif isinstance(exc, e.StaleDevicesError):
        error.update(stale=exc.stale)
    return {"error": error}


def headers_for(exc: e.TidingsError) -> dict[str, str]:
    if isinstance(exc, e.RateLimitedError):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


def typed_error_response(exc: e.TidingsError, metrics: Metrics) -> JSONResponse:
    """The answer to a typed error raised while serving a request (the app's exception
    handler, and `tidings.server.fast_send`), counted in ``tidings_errors_total``. The
    message is written to be safe to show: it never carries content or keys."""
    metrics.errors.labels(code=exc.code).inc()
    return JSONResponse(
        status_code=status_for(exc), content=body_for(exc), headers=headers_for(exc)
    )
