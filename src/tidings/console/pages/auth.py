"""Sign-in (password, then TOTP), the owner's enrolment through their link, home, sign-out.

- ``/login`` and ``/login/totp``: two pages, one check (`tidings.console.security` explains
  the pending state between them); every failure answers the same way, a lockout 429 with
  ``Retry-After``.
- ``/enrol/{token}`` (no session): the owner sets a password, is shown a fresh TOTP secret,
  and confirms it with a code; an unknown, used, replaced or expired link gets one clear page
  (410) and changes nothing. The token is in the path, so it is never logged: the access log
  records route templates only (`tidings.server.logs`), and every page sends
  ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import Response

from tidings.errors import (
    AuthenticationError,
    EnrolmentTokenError,
    LoginThrottledError,
    SafetyInputError,
)
from tidings.safety.staff import Permission

from ..context import ConsoleContext
from ..rendering import PageKit
from ..routing import PUBLIC, Ctx, RouteSpec
from ..security import (
    LOGIN_COOKIE,
    PENDING_TTL_MS,
    PRE_COOKIE,
    SESSION_COOKIE,
    csrf_token,
)
from ..state import PendingLoginStore
from .base import ContextPages

__all__ = ["ROUTES", "AuthPages", "expired_text"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/login", PUBLIC, "login_form"),
    RouteSpec("POST", "/login", PUBLIC, "login_password"),
    RouteSpec("GET", "/login/totp", PUBLIC, "totp_form"),
    RouteSpec("POST", "/login/totp", PUBLIC, "login_totp"),
    RouteSpec("GET", "/enrol/{token}", PUBLIC, "enrol_form"),
    RouteSpec("POST", "/enrol/{token}", PUBLIC, "enrol_password"),
    RouteSpec("POST", "/enrol/{token}/confirm", PUBLIC, "enrol_confirm"),
    RouteSpec("GET", "/", None, "home"),
    RouteSpec("POST", "/logout", None, "logout"),
)

SIGN_IN_FAILED = "Sign-in failed: check the username, password and code, and try again."


def expired_text(expired: bool) -> str:
    """What a page says when the session is missing (``expired``: it timed out)."""
    return (
        "Your session has expired. Sign in again."
        if expired
        else "You are not signed in, or your session has ended. Sign in again."
    )


class AuthPages(ContextPages):
    """The pages before (and at the end of) a session."""

    def __init__(
        self, kit: PageKit, context: ConsoleContext, *, pending: PendingLoginStore
    ) -> None:
        super().__init__(kit, context)
        self.pending = pending

    def _login_page(self, c: Ctx, template: str, status: int = 200, **values: Any) -> Response:
        """A sign-in form, its CSRF token bound to the pre-session cookie (set if missing)."""
        pre = c.request.cookies.get(PRE_COOKIE, "")
        new = len(pre) < 32
        if new:
            pre = secrets.token_urlsafe(32)
        login_csrf = csrf_token(self.kit.secret, "pre:" + pre)
        response = self.kit.render(c, template, status=status, login_csrf=login_csrf, **values)
        if new:
            self.kit.set_cookie(response, c.request, PRE_COOKIE, pre)
        return response

    # --- sign-in ------------------------------------------------------------------------------

    def login_form(self, c: Ctx) -> Response:
        expired = c.query("expired") == "1"
        return self._login_page(c, "login.html", message=expired_text(True) if expired else None)

    def login_password(self, c: Ctx) -> Response:
        username = c.field("username").strip()[:64]
        password = c.field("password")[:256]
        if not username or not password:
            return self._login_page(c, "login.html", 400, message="Enter a username and password.")
        handle = self.pending.put(username, password, c.now_ms)
        response = self.kit.redirect(c, "/login/totp")
        max_age = PENDING_TTL_MS // 1000
        self.kit.set_cookie(response, c.request, LOGIN_COOKIE, handle, max_age=max_age)
        return response

    def totp_form(self, c: Ctx) -> Response:
        pending = self.pending.peek(c.request.cookies.get(LOGIN_COOKIE), c.now_ms)
        if pending is None:
            return self.kit.redirect(c, "/login")
        return self._login_page(c, "totp.html", username=pending.username)

    def login_totp(self, c: Ctx) -> Response:
        pending = self.pending.take(c.request.cookies.get(LOGIN_COOKIE), c.now_ms)
        username = pending.username if pending else c.field("username").strip()[:64]
        password = pending.password if pending else c.field("password")[:256]
        code = c.field("code").strip().replace(" ", "")[:16]
        source = c.request.client.host if c.request.client else ""
        response: Response
        try:
            result = self.ctx.staff.login(username, password, code, now_ms=c.now_ms, source=source)
        except LoginThrottledError as exc:
            response = self._login_page(c, "login.html", 429, message=exc.message)
            response.headers["Retry-After"] = str(max(1, exc.retry_after_s))
        except AuthenticationError:
            response = self._login_page(c, "login.html", 401, message=SIGN_IN_FAILED)
        else:
            response = self.kit.redirect(c, "/")
            self.kit.set_cookie(response, c.request, SESSION_COOKIE, result.token)
        self.kit.delete_cookie(response, c.request, LOGIN_COOKIE)
        return response

    # --- enrolment (no session) ---------------------------------------------------------------

    def _enrol_page(self, c: Ctx, status: int, **values: Any) -> Response:
        return self._login_page(c, "enrol.html", status, token=c.path_param("token"), **values)

    def _enrol_invalid(self, c: Ctx, exc: EnrolmentTokenError) -> Response:
        return self._enrol_page(c, 410, stage="invalid", message=exc.message)

    def enrol_form(self, c: Ctx) -> Response:
        try:
            account = self.ctx.staff.enrolment_account(c.path_param("token"), now_ms=c.now_ms)
        except EnrolmentTokenError as exc:
            return self._enrol_invalid(c, exc)
        return self._enrol_page(c, 200, stage="password", account=account)

    def enrol_password(self, c: Ctx) -> Response:
        token = c.path_param("token")
        password = c.field("password")[:512]
        try:
            account = self.ctx.staff.enrolment_account(token, now_ms=c.now_ms)
            if password != c.field("password2")[:512]:
                message = "The two passwords differ."
                return self._enrol_page(c, 400, stage="password", account=account, message=message)
            try:
                totp = self.ctx.staff.begin_enrolment(token, password, now_ms=c.now_ms)
            except SafetyInputError as exc:
                return self._enrol_page(
                    c, 400, stage="password", account=account, message=exc.message
                )
        except EnrolmentTokenError as exc:
            return self._enrol_invalid(c, exc)
        return self._enrol_page(c, 200, stage="totp", totp=totp)

    def enrol_confirm(self, c: Ctx) -> Response:
        token = c.path_param("token")
        code = c.field("code").strip().replace(" ", "")[:16]
        try:
            try:
                account = self.ctx.staff.complete_enrolment(token, code, now_ms=c.now_ms)
            except SafetyInputError as exc:
                totp = self.ctx.staff.enrolment_totp(token, now_ms=c.now_ms)
                return self._enrol_page(c, 400, stage="totp", totp=totp, message=exc.message)
        except EnrolmentTokenError as exc:
            return self._enrol_invalid(c, exc)
        except SafetyInputError as exc:  # no password set yet: start from the first step
            account = self.ctx.staff.enrolment_account(token, now_ms=c.now_ms)
            return self._enrol_page(c, 400, stage="password", account=account, message=exc.message)
        return self._enrol_page(c, 200, stage="done", account=account)

    # --- signed in ----------------------------------------------------------------------------

    def home(self, c: Ctx) -> Response:
        """The first page the principal's roles have (queues, staff, audit, else preferences)."""
        p = c.p
        if p.has(Permission.VIEW_QUEUE):
            return self.kit.redirect(c, "/queues")
        if p.has(Permission.MANAGE_STAFF):
            return self.kit.redirect(c, "/staff")
        if p.has(Permission.VIEW_AUDIT):
            return self.kit.redirect(c, "/audit")
        return self.kit.redirect(c, "/preferences")

    def logout(self, c: Ctx) -> Response:
        self.ctx.staff.logout(c.token, now_ms=c.now_ms)
        self.kit.exposure.forget(c.session_id)  # the wellbeing count is per session
        response = self.kit.redirect(c, "/login")
        self.kit.delete_cookie(response, c.request, SESSION_COOKIE)
        return response
