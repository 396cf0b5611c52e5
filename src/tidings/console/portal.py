"""The requester portal for lawful requests (issue 11, docs/operations.md "Lawful requests"):
a small public web app, mounted apart from the staff console (``/lawful-portal``), where an
officer files a request, confirms it from the one-time link mailed to their official address,
and follows it — and, once legal has delivered, downloads the package.

Pages (every one server-rendered, no script):

- ``GET /`` — the request form (agency, officer, official e-mail, country, case number, legal
  basis, type, account, the data inventory's categories, due date; an emergency's
  justification). ``POST /submit`` files it (`LawfulRequestService.submit`): the link goes to
  the e-mail given, the page says so and shows no token.
- ``GET /verify/{request_id}?token=...`` — what the link opens: the request's summary and a
  Confirm button. A GET changes nothing (mail scanners open links); ``POST /verify/{id}``
  confirms (`confirm`) and shows the status page's access key once.
- ``GET /status`` — a form for the request id and access key; ``POST /status`` shows the
  request's state and steps (`status`); ``POST /status/package`` downloads the package once
  delivered (`portal_package`). Keys travel in POST bodies only, never in a URL.

There is no session. CSRF: every form carries ``HMAC(secret, "portal:" || pre-cookie)``, the
pre-cookie a random HttpOnly, SameSite=Strict cookie scoped to the portal. Each POST first
takes a token from the per-address rate limit the composition root passes in (``limit``,
answering `RateLimitedError`); request bodies are already capped by the server's body-limit
middleware, and forms here take at most `MAX_FORM_FIELDS` fields. Every refusal is the
service's typed error on a small error page with its status; nothing about other requests is
revealed (an unknown id and a wrong key read the same).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tidings.errors import CsrfError, InvalidLawfulRequestError, TidingsError, http_status
from tidings.safety.lawful import LawfulRequestService
from tidings.safety.lawful_model import RequestType

from .rendering import template_environment
from .security import csrf_token, csrf_valid, security_headers

__all__ = ["PORTAL_COOKIE", "PORTAL_CSRF_KEY_LABEL", "PortalLimit", "build_portal"]

PORTAL_COOKIE = "tidings_portal_pre"
PORTAL_CSRF_KEY_LABEL = b"Tidings_PortalCSRFKey_v1"
"""The label under which a cluster's portal CSRF secret is derived from the staff key."""
MAX_FORM_FIELDS = 64
STYLESHEET = Path(__file__).resolve().parent / "static" / "console.css"

PortalLimit = Callable[[str], Awaitable[None]]
"""Takes one token for a client address; raises `RateLimitedError` when it has none."""

KIND_LABELS = {
    RequestType.PRESERVATION: "Preservation (18 U.S.C. 2703(f))",
    RequestType.SUBPOENA: "Subpoena / production order",
    RequestType.COURT_ORDER: "Court order",
    RequestType.SEARCH_WARRANT: "Search warrant",
    RequestType.EMERGENCY: "Emergency disclosure (imminent risk of death or serious injury)",
}


async def _no_limit(_: str) -> None:
    return None


def _due_ms(text: str) -> int | None:
    """A ``YYYY-MM-DD`` date as the end of that UTC day; None when empty. Raises
    `InvalidLawfulRequestError`."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidLawfulRequestError("the due date is a date (YYYY-MM-DD)") from None
    return int(day.timestamp() * 1000) + 86_400_000 - 1


class Portal:
    """The portal's pages over one `LawfulRequestService` (module docstring)."""

    def __init__(self, service: LawfulRequestService, *, secret: bytes, limit: PortalLimit,
                 secure_cookies: bool | None) -> None:
        self.service = service
        self.secret = secret
        self.limit = limit
        self.secure_cookies = secure_cookies
        self.env = template_environment()
        self.stylesheet = STYLESHEET.read_bytes()

    # --- plumbing --------------------------------------------------------------------------

    def _render(self, request: Request, template: str, status: int = 200,
                **values: Any) -> HTMLResponse:
        cookie = request.cookies.get(PORTAL_COOKIE) or ""
        fresh = not cookie
        if fresh:
            cookie = secrets.token_urlsafe(24)
        base = str(request.scope.get("root_path", "")).rstrip("/")
        html = self.env.get_template(template).render(
            base=base, csrf=csrf_token(self.secret, "portal:" + cookie),
            kinds=KIND_LABELS, **values,
        )
        response = HTMLResponse(html, status_code=status)
        if fresh:
            secure = self.secure_cookies
            if secure is None:
                secure = request.url.scheme == "https"
            response.set_cookie(PORTAL_COOKIE, cookie, path=base or "/", secure=secure,
                                httponly=True, samesite="strict")
        return response

    def _error(self, request: Request, exc: TidingsError) -> HTMLResponse:
        status = http_status(type(exc))
        return self._render(request, "portal_error.html", status=status, status_code=status,
                            message=exc.message)

    def route(self, handler: Callable[[Request, FormData | None], Response],
              method: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            form: FormData | None = None
            try:
                if method == "POST":
                    await self.limit(request.client.host if request.client else "unknown")
                    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
                    binding = "portal:" + request.cookies.get(PORTAL_COOKIE, "")
                    if not request.cookies.get(PORTAL_COOKIE) or not csrf_valid(
                        self.secret, binding, form.get("csrf")
                    ):
                        raise CsrfError()
                response: Response = await run_in_threadpool(handler, request, form)
            except TidingsError as exc:
                response = self._error(request, exc)
            for name, value in security_headers(https=request.url.scheme == "https").items():
                response.headers.setdefault(name, value)
            return response

        return endpoint

    @staticmethod
    def _field(form: FormData | None, name: str) -> str:
        value = form.get(name) if form is not None else None
        return value.strip() if isinstance(value, str) else ""

    # --- pages -----------------------------------------------------------------------------

    def _categories(self) -> list[Any]:
        return list(self.service.categories())

    def form(self, request: Request, _: FormData | None) -> Response:
        return self._render(request, "portal_form.html", categories=self._categories(),
                            values={}, chosen=[])

    def submit(self, request: Request, form: FormData | None) -> Response:
        assert form is not None
        values = {k: self._field(form, k) for k in (
            "agency", "officer_name", "officer_email", "country", "case_number",
            "legal_basis", "kind", "account", "due", "emergency_justification")}
        chosen = [str(v) for v in form.getlist("scope") if isinstance(v, str)]
        try:
            intake = self.service.submit(
                agency=values["agency"], officer_name=values["officer_name"],
                officer_email=values["officer_email"], country=values["country"],
                case_number=values["case_number"], legal_basis=values["legal_basis"],
                kind=values["kind"], account=values["account"], scope=chosen,
                due_ms=_due_ms(values["due"]),
                emergency_justification=values["emergency_justification"] or None,
            )
        except InvalidLawfulRequestError as exc:
            # The form again, as filled in, with the reason (nothing was recorded).
            return self._render(request, "portal_form.html", status=400, error=exc.message,
                                categories=self._categories(), values=values, chosen=chosen)
        return self._render(request, "portal_sent.html", request_id=intake.request.request_id,
                            email=intake.request.officer_email,
                            domain_allowed=intake.request.domain_allowed)

    def verify_page(self, request: Request, _: FormData | None) -> Response:
        """What the link opens: a Confirm button. Changes nothing and reads nothing (the mail
        said what the request is; an id alone shows nobody anything)."""
        return self._render(request, "portal_verify.html",
                            request_id=request.path_params["request_id"],
                            token=request.query_params.get("token", ""))

    def verify(self, request: Request, form: FormData | None) -> Response:
        access = self.service.confirm(request.path_params["request_id"],
                                      self._field(form, "token"))
        return self._render(request, "portal_confirmed.html", req=access.request,
                            key=access.key)

    def status_form(self, request: Request, _: FormData | None) -> Response:
        return self._render(request, "portal_status_form.html")

    def status(self, request: Request, form: FormData | None) -> Response:
        key = self._field(form, "key")
        found = self.service.status(self._field(form, "request_id"), key)
        return self._render(request, "portal_status.html", req=found, key=key,
                            dropped=sorted(json.loads(found.dropped).items()))

    def package(self, request: Request, form: FormData | None) -> Response:
        stored = self.service.portal_package(self._field(form, "request_id"),
                                             self._field(form, "key"))
        return Response(stored.archive, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{stored.filename}"'})

    def css(self, request: Request, _: FormData | None) -> Response:
        return Response(self.stylesheet, media_type="text/css",
                        headers={"Cache-Control": "no-cache"})


def build_portal(
    service: LawfulRequestService,
    *,
    secret: bytes | None = None,
    limit: PortalLimit | None = None,
    secure_cookies: bool | None = None,
) -> Starlette:
    """The portal as an ASGI app to mount (``/lawful-portal``). ``secret`` keys the CSRF
    tokens (default: random per process; pass a shared one in a cluster); ``limit`` is the
    per-address rate limit taken before every POST (default: none)."""
    portal = Portal(service, secret=secret or secrets.token_bytes(32),
                    limit=limit or _no_limit, secure_cookies=secure_cookies)
    routes = [
        Route("/", portal.route(portal.form, "GET"), methods=["GET"]),
        Route("/submit", portal.route(portal.submit, "POST"), methods=["POST"]),
        Route("/verify/{request_id}", portal.route(portal.verify_page, "GET"), methods=["GET"]),
        Route("/verify/{request_id}", portal.route(portal.verify, "POST"), methods=["POST"]),
        Route("/status", portal.route(portal.status_form, "GET"), methods=["GET"]),
        Route("/status", portal.route(portal.status, "POST"), methods=["POST"]),
        Route("/status/package", portal.route(portal.package, "POST"), methods=["POST"]),
        Route("/static/console.css", portal.route(portal.css, "GET"), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.portal = portal
    return app
