"""The staff console: server-rendered pages over the safety services, mounted under /console.

Every route is declared once, in its page module (`tidings.console.pages`), with the
permission it needs; `ROUTES` is all of them. The dispatcher (`Console`) is the one place that
authenticates the session, checks the CSRF token on every POST and the route's permission
*before* the handler runs; the domain services check again (queue membership together with
the child-safety clearance, locks, four eyes), so a missing check in one layer is caught by
the other. Errors become small HTML pages carrying only the typed error's message, which never
holds content, keys or tokens.

No JavaScript framework: htmx was asked for, but it is not on PyPI and cannot be vendored here,
so every page works with plain forms and links, and one small hand-written script
(``static/console.js``) adds keyboard shortcuts, live countdowns, blur-all and the exposure
counter. Media reveal works without it (a CSS checkbox toggle).

Domain calls are synchronous; each request runs in the thread pool so a SQL-backed service
does not block the event loop.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tidings.clock import now_ms
from tidings.crypto.primitives import sha256
from tidings.errors import (
    AuthenticationError,
    CsrfError,
    NotFoundError,
    SessionExpiredError,
    TidingsError,
    http_status,
)
from tidings.safety.sql import SqlStaffRepository
from tidings.safety.staff import Permission

from .context import ConsoleContext
from .pages import (
    appeals,
    audit,
    auth,
    banks,
    cases,
    holds,
    inventory,
    lawful,
    preferences,
    referrals,
    staff,
    transparency,
)
from .rendering import PageKit
from .routing import PUBLIC, Ctx, Handler, RouteSpec
from .security import (
    CSRF_KEY_LABEL,
    PRE_COOKIE,
    SESSION_COOKIE,
    csrf_valid,
    security_headers,
)
from .state import ConsoleState, PreferenceStore
from .state_sql import sql_state

__all__ = ["PUBLIC", "ROUTES", "Console", "RouteSpec", "build_console"]

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES: Mapping[str, str] = {"console.css": "text/css", "console.js": "text/javascript"}
STATIC_ROUTES: tuple[RouteSpec, ...] = (RouteSpec("GET", "/static/{name}", PUBLIC, "static"),)

MAX_FORM_FIELDS = 200
MAX_FORM_PART = 64 * 1024


class _LoginRedirect(Exception):
    def __init__(self, expired: bool) -> None:
        self.expired = expired


class ConsoleAssets:
    """The console's own stylesheet and script, read once at start."""

    def __init__(self) -> None:
        self.files = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}

    def static(self, c: Ctx) -> Response:
        name = c.path_param("name")
        if name not in self.files:
            raise NotFoundError("no such file")
        headers = {"Cache-Control": "no-cache"}
        return Response(self.files[name], media_type=STATIC_TYPES[name], headers=headers)


PageFactory = Callable[[PageKit, ConsoleContext, ConsoleState], object]

PAGES: tuple[tuple[tuple[RouteSpec, ...], PageFactory], ...] = (
    (STATIC_ROUTES, lambda kit, context, state: ConsoleAssets()),
    (
        auth.ROUTES,
        lambda kit, context, state: auth.AuthPages(kit, context, pending=state.pending),
    ),
    (preferences.ROUTES, lambda kit, context, state: preferences.PreferencePages(kit)),
    (cases.ROUTES, lambda kit, context, state: cases.CasePages(kit, context)),
    (appeals.ROUTES, lambda kit, context, state: appeals.AppealPages(kit, context)),
    (audit.ROUTES, lambda kit, context, state: audit.AuditPages(kit, context)),
    (staff.ROUTES, lambda kit, context, state: staff.StaffPages(kit, context)),
    (banks.ROUTES, lambda kit, context, state: banks.BankPages(kit, context)),
    (inventory.ROUTES, lambda kit, context, state: inventory.InventoryPages(kit, context)),
    (
        transparency.ROUTES,
        lambda kit, context, state: transparency.TransparencyPages(kit, context),
    ),
    (holds.ROUTES, lambda kit, context, state: holds.HoldPages(kit, context)),
    (referrals.ROUTES, lambda kit, context, state: referrals.ReferralPages(kit, context)),
    (lawful.ROUTES, lambda kit, context, state: lawful.LawfulPages(kit, context)),
)
"""Each page group's route table and how its page object is built; a route's handler is the
page object's method of the route's name."""

ROUTES: tuple[RouteSpec, ...] = tuple(spec for routes, _ in PAGES for spec in routes)
"""Every console route, in matching order."""


class Console:
    """The dispatcher over the page objects of `PAGES`. Build it with `build_console`.

    Raises:
        AttributeError: a route has no handler.  ValueError: two routes share a name (one
            handler would silently replace the other).
    """

    def __init__(
        self,
        context: ConsoleContext,
        kit: PageKit,
        *,
        clock: Callable[[], int],
        state: ConsoleState,
    ) -> None:
        self.ctx = context
        self.kit = kit
        self.clock = clock
        self.state = state
        self.handlers: dict[str, Handler] = {}
        for routes, build in PAGES:
            page = build(kit, context, state)
            for spec in routes:
                if spec.name in self.handlers:
                    raise ValueError(f"two console routes are named {spec.name!r}")
                self.handlers[spec.name] = getattr(page, spec.name)

    def asgi(self) -> Starlette:
        routes = [
            Route(spec.path, self._endpoint(spec), methods=[spec.method], name=spec.name)
            for spec in ROUTES
        ]
        return Starlette(routes=routes)

    def _endpoint(self, spec: RouteSpec) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            form = None
            if spec.method == "POST":
                form = await request.form(
                    max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_PART
                )
            response: Response = await run_in_threadpool(self._dispatch, spec, request, form)
            return response

        return endpoint

    def _authenticate(self, spec: RouteSpec, c: Ctx) -> None:
        """The session, CSRF and permission checks of ``spec``, in that order.

        Raises: _LoginRedirect (no or an expired session), CsrfError (a POST without this
        session's token; the sign-in forms' token is bound to the pre-session cookie),
        PermissionDeniedError (the route's permission is missing).
        """
        request = c.request
        if spec.permission == PUBLIC:
            binding = "pre:" + request.cookies.get(PRE_COOKIE, "")
        else:
            token = request.cookies.get(SESSION_COOKIE, "")
            try:
                c.principal = self.ctx.staff.authenticate(token, now_ms=c.now_ms)
            except SessionExpiredError:
                raise _LoginRedirect(True) from None
            except AuthenticationError:
                raise _LoginRedirect(False) from None
            c.token = token
            c.session_id = _session_key(token)
            binding = token
        if spec.method == "POST" and not csrf_valid(self.kit.secret, binding, c.field("csrf")):
            raise CsrfError()
        if isinstance(spec.permission, Permission):
            c.p.require(spec.permission)

    def _dispatch(self, spec: RouteSpec, request: Request, form: FormData | None) -> Response:
        c = Ctx(request=request, form=form, now_ms=self.clock())
        response: Response
        try:
            self._authenticate(spec, c)
            response = self.handlers[spec.name](c)
        except _LoginRedirect as redirect:
            if spec.method == "GET":
                query = "?expired=1" if redirect.expired else ""
                target = f"{self.kit.base(request)}/login{query}"
                response = RedirectResponse(target, status_code=303)
            else:
                response = self.kit.error(c, 401, auth.expired_text(redirect.expired))
            self.kit.delete_cookie(response, request, SESSION_COOKIE)
        except TidingsError as exc:
            response = self.kit.error(c, _status_for(exc), exc.message)
        for name, value in security_headers(https=request.url.scheme == "https").items():
            response.headers.setdefault(name, value)
        return response


def _session_key(token: str) -> str:
    return sha256(token.encode("utf-8")).hex()


def _status_for(exc: TidingsError) -> int:
    # The one status table of every HTTP surface, so a page and the API never disagree.
    return http_status(type(exc))


def build_console(
    service_or_context: object,
    *,
    clock: Callable[[], int] | None = None,
    secret: bytes | None = None,
    secure_cookies: bool | None = None,
    blur_default: bool = True,
    greyscale_default: bool = True,
    state: ConsoleState | None = None,
) -> Starlette:
    """The console as an ASGI app to mount under ``/console``.

    ``service_or_context``: a `ConsoleContext`, or the safety service facade (adapted with
    `ConsoleContext.from_service`). ``clock`` returns epoch milliseconds (tests pass a fake).
    ``secure_cookies`` None: Secure cookies when the request is HTTPS (behind a TLS proxy,
    pass True). ``blur_default`` / ``greyscale_default``: the organisation's media defaults,
    which each reviewer may override on the preferences page.

    On SQL repositories (a `SqlStaffRepository`) the console is stateless per node: ``state``
    defaults to the shared-database stores (`tidings.console.state_sql`) and ``secret``, the
    CSRF key, to one derived from the staff key (`CSRF_KEY_LABEL`), the same on every node
    that reads the same ``staff.key`` and never stored. On in-memory repositories both default
    to this process (`ConsoleState.memory`, a random secret).

    Raises:
        TypeError: ``service_or_context`` lacks what `ConsoleContext.from_service` needs.
    """
    context = ConsoleContext.from_service(service_or_context)
    shared = context.staff_repo if isinstance(context.staff_repo, SqlStaffRepository) else None
    if state is None:
        state = sql_state(shared.database) if shared is not None else ConsoleState.memory()
    if secret is None:
        secret = (
            shared.derived_key(CSRF_KEY_LABEL) if shared is not None else secrets.token_bytes(32)
        )
    kit = PageKit(
        context,
        secret=secret,
        secure_cookies=secure_cookies,
        media=PreferenceStore(
            state.preferences, blur_default=blur_default, greyscale_default=greyscale_default
        ),
        exposure=state.exposure,
    )
    console = Console(context, kit, clock=clock or now_ms, state=state)
    app = console.asgi()
    app.state.console = console
    return app
