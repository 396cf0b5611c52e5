"""How typed errors become HTTP answers: a status per error class, and a JSON body
``{"error": {"code", "message", ...details}}`` (docs/api.md)."""

from __future__ import annotations

from typing import Any

from tidings import errors as e

_STATUS: list[tuple[type[e.TidingsError], int]] = [
    # Most specific first.
    (e.AttachmentTooLargeError, 413),
    (e.OversizedError, 413),
    (e.UnauthorizedError, 401),
    (e.AccountBannedError, 403),
    (e.AccountSuspendedError, 403),
    (e.AccountRestrictedError, 403),
    (e.ForbiddenError, 403),
    (e.PermissionDeniedError, 403),
    (e.AuthenticationError, 401),
    (e.UnknownAccountError, 404),
    (e.UnknownDeviceError, 404),
    (e.UnknownAttachmentError, 404),
    (e.NotFoundError, 404),
    (e.UsernameTakenError, 409),
    (e.MismatchedDevicesError, 409),
    (e.LastDeviceError, 409),
    (e.ConflictError, 409),
    (e.StaleDevicesError, 410),
    (e.RateLimitedError, 429),
    (e.QueueFullError, 507),
    (e.AttachmentQuotaExceededError, 507),
]


def status_of(kind: type[e.TidingsError]) -> int:
    """The HTTP status of errors of class ``kind`` (400 unless the table says otherwise)."""
    for base, status in _STATUS:
        if issubclass(kind, base):
            return status
    return 400


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
