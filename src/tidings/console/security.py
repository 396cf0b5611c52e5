"""Console web security: CSRF tokens, cookies, response headers, the two-step sign-in state.

CSRF: a synchronizer token bound to the session. The token is
``HMAC-SHA256(console_secret, "Tidings_ConsoleCSRF_v1" || binding)`` where the binding is the
session token (signed in) or the pre-session cookie (the sign-in forms). It is embedded in
every form and checked on every POST with a constant-time comparison; a token from another
session, or none, is refused (403). Cookies are also ``SameSite=Strict``, so a cross-site POST
does not even carry the session.

Sign-in is two pages (username + password, then the TOTP code) but one check: the domain's
`StaffService.login` verifies all three together and answers every failure the same way (no
password oracle). Between the two pages the console keeps the pending credentials in memory
only, under a random handle, for at most `PENDING_TTL_MS`, usable once. In a cluster this
state is per node: put the console behind sticky sessions, or sign in on one page (the TOTP
form also accepts username and password).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from tidings.crypto.primitives import constant_time_equal, hmac_sha256, sha256

__all__ = [
    "HSTS",
    "LOGIN_COOKIE",
    "PENDING_TTL_MS",
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "ExposureCounter",
    "PendingLogin",
    "PendingLogins",
    "PreferenceStore",
    "Preferences",
    "csrf_token",
    "csrf_valid",
    "security_headers",
]

SESSION_COOKIE = "tidings_console"
PRE_COOKIE = "tidings_console_pre"
"""The pre-session cookie the sign-in forms' CSRF tokens are bound to."""
LOGIN_COOKIE = "tidings_console_login"
"""The handle of the pending first sign-in step (`PendingLogins`)."""

CSRF_LABEL = b"Tidings_ConsoleCSRF_v1"
PENDING_TTL_MS = 3 * 60_000
MAX_PENDING = 10_000

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


HSTS = "max-age=63072000; includeSubDomains"
"""Two years, the preload-list minimum; sent only over HTTPS (RFC 6797 ignores it on HTTP)."""


def security_headers(*, https: bool = False) -> dict[str, str]:
    """Headers on every console response: no caching of user data, no framing, strict CSP;
    over HTTPS (``https``: the request's scheme) also HSTS."""
    headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
    if https:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def csrf_token(secret: bytes, binding: str) -> str:
    """The CSRF token for a session (or pre-session) token."""
    return hmac_sha256(secret, CSRF_LABEL + binding.encode("utf-8")).hex()


def csrf_valid(secret: bytes, binding: str | None, presented: object) -> bool:
    """Whether ``presented`` is the CSRF token of ``binding`` (constant-time; anything that is
    not a 64-character ASCII string is simply invalid, never an error)."""
    if not binding or not isinstance(presented, str) or len(presented) != 64:
        return False
    if not presented.isascii():
        return False
    return constant_time_equal(csrf_token(secret, binding).encode(), presented.encode())


@dataclass(frozen=True, slots=True)
class PendingLogin:
    username: str
    password: str = field(repr=False)
    expires_ms: int


class PendingLogins:
    """First sign-in step's credentials, in memory, keyed by SHA-256 of a random handle."""

    def __init__(self) -> None:
        self._rows: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()

    def put(self, username: str, password: str, now_ms: int) -> str:
        handle = secrets.token_urlsafe(32)
        with self._lock:
            self._sweep(now_ms)
            if len(self._rows) >= MAX_PENDING:
                self._rows.pop(next(iter(self._rows)))
            self._rows[_key(handle)] = PendingLogin(username, password, now_ms + PENDING_TTL_MS)
        return handle

    def peek(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        if not handle:
            return None
        row = self._rows.get(_key(handle))
        return row if row is not None and row.expires_ms > now_ms else None

    def take(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        """The pending sign-in, removed (one attempt per password entry)."""
        if not handle:
            return None
        with self._lock:
            row = self._rows.pop(_key(handle), None)
        return row if row is not None and row.expires_ms > now_ms else None

    def _sweep(self, now_ms: int) -> None:
        for key in [k for k, v in self._rows.items() if v.expires_ms <= now_ms]:
            del self._rows[key]


def _key(handle: str) -> str:
    return sha256(handle.encode("utf-8")).hex()


class ExposureCounter:
    """Per-session count of media items a reviewer revealed (wellbeing), keyed by the
    session id (SHA-256 of the token), in memory."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> int:
        return self._counts.get(session_id, 0)

    def add(self, session_id: str, n: int = 1) -> int:
        with self._lock:
            value = self._counts.get(session_id, 0) + max(0, n)
            self._counts[session_id] = value
            return value

    def forget(self, session_id: str) -> None:
        self._counts.pop(session_id, None)


@dataclass(frozen=True, slots=True)
class Preferences:
    """Media display: ``None`` follows the organisation default."""

    blur: bool | None = None
    greyscale: bool | None = None


class PreferenceStore:
    """Personal overrides of the organisation's media defaults (in memory per process)."""

    def __init__(self, *, blur_default: bool = True, greyscale_default: bool = True) -> None:
        self.blur_default = blur_default
        self.greyscale_default = greyscale_default
        self._rows: dict[str, Preferences] = {}

    def effective(self, staff_id: str) -> tuple[bool, bool]:
        """(blur, greyscale) for this staff member: their choice, else the default."""
        prefs = self.get(staff_id)
        blur = self.blur_default if prefs.blur is None else prefs.blur
        grey = self.greyscale_default if prefs.greyscale is None else prefs.greyscale
        return blur, grey

    def get(self, staff_id: str) -> Preferences:
        return self._rows.get(staff_id, Preferences())

    def put(self, staff_id: str, prefs: Preferences) -> None:
        self._rows[staff_id] = prefs
