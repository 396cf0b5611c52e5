"""How typed errors become HTTP answers: a status per error class, and a JSON body
``{"error": {"code", "message", ...details}}`` (docs/api.md)."""

from __future__ import annotations

from typing import Any

from tidings import errors as e


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
