"""Console web security: CSRF tokens, cookies, response headers, the two-step sign-in state.

CSRF: a synchronizer token bound to the session. The token is
``HMAC-SHA256(console_secret, "Tidings_ConsoleCSRF_v1" || binding)`` where the binding is the
session token (signed in) or the pre-session cookie (the sign-in forms). It is embedded in
every form and checked on every POST with a constant-time comparison; a token from another
session, or none, is refused (403). Cookies are also ``SameSite=Strict``, so a cross-site POST
does not even carry the session.

The secret: on a SQL deployment it is derived from the ``staff.key`` file
(`CSRF_KEY_LABEL`, `tidings.safety.sql.SqlStaffRepository.derived_key`), which every node
already shares, so a token issued by one node is accepted by any other and survives
restarts; it is never stored, in the database or anywhere else.

Sign-in is two pages (username + password, then the TOTP code) but one check: the domain's
`StaffService.login` verifies all three together and answers every failure the same way (no
password oracle). Between the two pages the pending credentials wait under a random handle
(the login cookie) for at most `PENDING_TTL_MS`, usable once (`tidings.console.state`; in the
shared database on a SQL deployment, so the TOTP page may be served by another node).
"""

from __future__ import annotations

from tidings.crypto.primitives import constant_time_equal, hmac_sha256

__all__ = [
    "CSRF_KEY_LABEL",
    "HSTS",
    "LOGIN_COOKIE",
    "PENDING_TTL_MS",
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "csrf_token",
    "csrf_valid",
    "security_headers",
]

SESSION_COOKIE = "tidings_console"
PRE_COOKIE = "tidings_console_pre"
"""The pre-session cookie the sign-in forms' CSRF tokens are bound to."""
LOGIN_COOKIE = "tidings_console_login"
"""The handle of the pending first sign-in step (`tidings.console.state.PendingLoginStore`)."""

CSRF_LABEL = b"Tidings_ConsoleCSRF_v1"
CSRF_KEY_LABEL = b"Tidings_ConsoleCSRFKey_v1"
"""The HKDF info under which the CSRF secret is derived from the staff key."""
PENDING_TTL_MS = 3 * 60_000

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
