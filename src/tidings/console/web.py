"""The staff console: server-rendered pages over the safety services, mounted under /console.

Every route is declared once in `ROUTES` with the permission it needs (`None`: any signed-in
staff member; ``public``: the sign-in pages and static files). The dispatcher authenticates
the session, checks the CSRF token on every POST, then checks the route's permission *before*
the handler runs; the domain services check again (queue membership together with the
child-safety clearance, locks, four eyes), so a missing check in one layer is caught by the
other. Errors become small HTML pages carrying only the typed error's message, which never
holds content, keys or tokens.

No JavaScript framework: htmx was asked for, but it is not on PyPI and cannot be vendored here,
so every page works with plain forms and links, and one small hand-written script
(``static/console.js``) adds keyboard shortcuts, live countdowns, blur-all and the exposure
counter. Media reveal works without it (a CSS checkbox toggle).

Domain calls are synchronous; each request runs in the thread pool so a SQL-backed service
does not block the event loop.
"""

from __future__ import annotations

import base64
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tidings.clock import DAY_MS, now_ms
from tidings.crypto.franking import ReportItem
from tidings.errors import (
    AuthenticationError,
    CsrfError,
    DecodeError,
    EvidenceExpiredError,
    InvalidDecisionError,
    LoginThrottledError,
    NotFoundError,
    PermissionDeniedError,
    SafetyInputError,
    SessionExpiredError,
    TidingsError,
    http_status,
)
from tidings.safety.cases import (
    CaseState,
    DecisionKind,
    DecisionRecord,
    DecisionStatus,
)
from tidings.safety.evidence import KIND_MESSAGES, decode_items
from tidings.safety.staff import Permission, Principal
from tidings.wire import pb

from .context import ConsoleContext
from .security import (
    ExposureCounter,
    PendingLogins,
    Preferences,
    PreferenceStore,
    csrf_token,
    csrf_valid,
    security_headers,
)
from .staff_pages import StaffPages

__all__ = ["PUBLIC", "ROUTES", "Console", "RouteSpec", "build_console"]

log = logging.getLogger("tidings.console")

_HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "tidings_console"
PRE_COOKIE = "tidings_console_pre"
LOGIN_COOKIE = "tidings_console_login"
QUEUE_PAGE = 100
AUDIT_PAGE = 100
MAX_INLINE_MEDIA = 8 * 1024 * 1024
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
EVIDENCE_PURPOSE = "case review in the staff console"

PUBLIC = "public"
"""Marker for routes that need no session (sign-in pages, static files)."""

DECISION_LABELS: Mapping[DecisionKind, tuple[str, str]] = {
    DecisionKind.DISMISS: ("Dismiss", "d"),
    DecisionKind.WARN: ("Warn", "w"),
    DecisionKind.RESTRICT: ("Restrict", "r"),
    DecisionKind.SUSPEND: ("Suspend", "s"),
    DecisionKind.BAN: ("Ban", "b"),
    DecisionKind.ESCALATE_REFERRAL: ("Escalate to referral", "e"),
}

FLASH: Mapping[str, str] = {
    "claimed": "Case claimed: you hold its lock.",
    "released": "Lock released.",
    "noted": "Note added.",
    "decided": "Decision recorded.",
    "proposed": "Proposal recorded: a second reviewer must confirm it before it takes effect.",
    "escalated": "Escalated for a second reviewer.",
    "confirmed": "Decision confirmed and enforced.",
    "rejected": "Proposal rejected; the case is open again.",
    "assigned": "Case assigned.",
    "appeal": "Appeal decided.",
    "staff": "Staff account updated. Roles and clearances added wait for a second admin's "
    "approval (Pending grants).",
    "approved": "Grant approved: it takes effect now.",
    "grant_rejected": "Grant rejected.",
    "prefs": "Preferences saved.",
    "end": "End of the queue.",
}


class _LoginRedirect(Exception):
    def __init__(self, expired: bool) -> None:
        self.expired = expired


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One console route: method, path (relative to the mount), the permission it needs."""

    method: str
    path: str
    permission: Permission | str | None
    name: str


@dataclass(slots=True)
class Ctx:
    """One request, after authentication."""

    request: Request
    form: FormData | None
    now_ms: int
    principal: Principal | None = None
    token: str = ""
    session_id: str = ""
    names: dict[str, str] = field(default_factory=dict)

    @property
    def p(self) -> Principal:
        assert self.principal is not None
        return self.principal

    def field(self, name: str, default: str = "") -> str:
        if self.form is None:
            return default
        value = self.form.get(name)
        return value if isinstance(value, str) else default

    def fields(self, name: str) -> list[str]:
        if self.form is None:
            return []
        return [v for v in self.form.getlist(name) if isinstance(v, str)]


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/static/{name}", PUBLIC, "static"),
    RouteSpec("GET", "/login", PUBLIC, "login_form"),
    RouteSpec("POST", "/login", PUBLIC, "login_password"),
    RouteSpec("GET", "/login/totp", PUBLIC, "totp_form"),
    RouteSpec("POST", "/login/totp", PUBLIC, "login_totp"),
    RouteSpec("GET", "/enrol/{token}", PUBLIC, "enrol_form"),
    RouteSpec("POST", "/enrol/{token}", PUBLIC, "enrol_password"),
    RouteSpec("POST", "/enrol/{token}/confirm", PUBLIC, "enrol_confirm"),
    RouteSpec("GET", "/", None, "home"),
    RouteSpec("POST", "/logout", None, "logout"),
    RouteSpec("GET", "/preferences", None, "preferences"),
    RouteSpec("POST", "/preferences", None, "save_preferences"),
    RouteSpec("POST", "/wellbeing/exposure", Permission.VIEW_EVIDENCE, "exposure"),
    RouteSpec("GET", "/queues", Permission.VIEW_QUEUE, "queues"),
    RouteSpec("GET", "/queues/{queue_id}", Permission.VIEW_QUEUE, "queue"),
    RouteSpec("GET", "/queues/{queue_id}/step", Permission.VIEW_QUEUE, "queue_step"),
    RouteSpec("GET", "/cases/{case_id}", Permission.VIEW_QUEUE, "case"),
    RouteSpec("POST", "/cases/{case_id}/claim", Permission.CLAIM_CASE, "claim"),
    RouteSpec("POST", "/cases/{case_id}/release", Permission.CLAIM_CASE, "release"),
    RouteSpec("POST", "/cases/{case_id}/note", Permission.ADD_NOTE, "note"),
    RouteSpec("POST", "/cases/{case_id}/decide", Permission.DECIDE, "decide"),
    RouteSpec("POST", "/cases/{case_id}/escalate", Permission.ESCALATE, "escalate"),
    RouteSpec("POST", "/cases/{case_id}/confirm", Permission.CONFIRM_DECISION, "confirm"),
    RouteSpec("POST", "/cases/{case_id}/reject", Permission.CONFIRM_DECISION, "reject"),
    RouteSpec("POST", "/cases/{case_id}/assign", Permission.ASSIGN_CASE, "assign"),
    RouteSpec("GET", "/appeals", Permission.DECIDE_APPEAL, "appeals"),
    RouteSpec("POST", "/appeals/{appeal_id}/decide", Permission.DECIDE_APPEAL, "decide_appeal"),
    RouteSpec("GET", "/audit", Permission.VIEW_AUDIT, "audit"),
    RouteSpec("GET", "/staff", Permission.MANAGE_STAFF, "staff"),
    RouteSpec("POST", "/staff", Permission.MANAGE_STAFF, "create_staff"),
    RouteSpec("POST", "/staff/{staff_id}/roles", Permission.MANAGE_STAFF, "staff_roles"),
    RouteSpec(
        "POST", "/staff/{staff_id}/child-safety", Permission.MANAGE_STAFF, "staff_child_safety"
    ),
    RouteSpec("POST", "/staff/{staff_id}/queues", Permission.MANAGE_QUEUES, "staff_queues"),
    RouteSpec("POST", "/staff/{staff_id}/disable", Permission.MANAGE_STAFF, "staff_disable"),
    RouteSpec("POST", "/staff/{staff_id}/enrolment", Permission.MANAGE_STAFF, "staff_enrolment"),
    RouteSpec("POST", "/grants/{grant_id}/approve", Permission.MANAGE_STAFF, "grant_approve"),
    RouteSpec("POST", "/grants/{grant_id}/reject", Permission.MANAGE_STAFF, "grant_reject"),
)


def _fmt_ts(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_duration(ms: int) -> str:
    sign = "-" if ms < 0 else ""
    s = abs(ms) // 1000
    if s >= 86_400:
        return f"{sign}{s // 86_400}d {s % 86_400 // 3600}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{sign}{s // 60}m {s % 60:02d}s"


class Console(StaffPages):
    """The console application. Build it with `build_console`."""

    def __init__(
        self,
        context: ConsoleContext,
        *,
        clock: Callable[[], int] | None = None,
        secret: bytes | None = None,
        secure_cookies: bool | None = None,
        blur_default: bool = True,
        greyscale_default: bool = True,
    ) -> None:
        self.ctx = context
        self.clock = clock or now_ms
        self.secret = secret or secrets.token_bytes(32)
        self.secure_cookies = secure_cookies
        self.blur_default = blur_default
        self.greyscale_default = greyscale_default
        self.pending = PendingLogins()
        self.exposure = ExposureCounter()
        self.prefs = PreferenceStore()
        self.env = Environment(
            loader=FileSystemLoader(str(_HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ts"] = _fmt_ts
        self.env.filters["dur"] = _fmt_duration
        self.static = {
            "console.css": ((_HERE / "static" / "console.css").read_bytes(), "text/css"),
            "console.js": ((_HERE / "static" / "console.js").read_bytes(), "text/javascript"),
        }
        self.handlers: dict[str, Callable[[Ctx], Response]] = {
            spec.name: getattr(self, "h_" + spec.name) for spec in ROUTES
        }

    # --- plumbing -----------------------------------------------------------------------------

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
                form = await request.form(max_files=0, max_fields=200, max_part_size=64 * 1024)
            response: Response = await run_in_threadpool(self._dispatch, spec, request, form)
            return response

        return endpoint

    def _secure(self, request: Request) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        return request.url.scheme == "https"

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _dispatch(self, spec: RouteSpec, request: Request, form: FormData | None) -> Response:
        c = Ctx(request=request, form=form, now_ms=self.clock())
        try:
            if spec.permission == PUBLIC:
                if spec.method == "POST" and not csrf_valid(
                    self.secret, "pre:" + request.cookies.get(PRE_COOKIE, ""), c.field("csrf")
                ):
                    raise CsrfError()
                response = self.handlers[spec.name](c)
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
                if spec.method == "POST" and not csrf_valid(self.secret, token, c.field("csrf")):
                    raise CsrfError()
                if isinstance(spec.permission, Permission):
                    c.principal.require(spec.permission)
                response = self.handlers[spec.name](c)
        except _LoginRedirect as redirect:
            if spec.method == "GET":
                target = f"{self._base(request)}/login" + ("?expired=1" if redirect.expired else "")
                response = RedirectResponse(target, status_code=303)
            else:
                response = self._error(c, 401, _expired_text(redirect.expired))
            response.delete_cookie(SESSION_COOKIE, path=self._cookie_path(request))
        except TidingsError as exc:
            response = self._error(c, _status_for(exc), exc.message)
        for name, value in security_headers(https=request.url.scheme == "https").items():
            response.headers.setdefault(name, value)
        return response

    def _cookie_path(self, request: Request) -> str:
        return self._base(request) or "/"

    def _set_cookie(
        self,
        response: Response,
        request: Request,
        name: str,
        value: str,
        max_age: int | None = None,
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self._cookie_path(request),
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )

    def _name(self, c: Ctx, staff_id: str | None) -> str:
        if not staff_id:
            return "—"
        if staff_id not in c.names:
            account = self.ctx.staff_repo.get_staff(staff_id)
            c.names[staff_id] = account.username if account is not None else staff_id
        return c.names[staff_id]

    def _render(self, c: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        base = self._base(c.request)
        p = c.principal
        media = self._media_prefs(p.staff_id) if p is not None else (True, True)
        remaining = self.ctx.staff.session_remaining_ms(c.token, now_ms=c.now_ms) if c.token else 0
        flash = FLASH.get(c.request.query_params.get("done", ""))
        html = self.env.get_template(template).render(
            base=base,
            me=p,
            csrf=csrf_token(self.secret, c.token) if c.token else "",
            P=Permission,
            session_remaining_ms=remaining,
            exposure=self.exposure.get(c.session_id) if c.session_id else 0,
            blur=media[0],
            greyscale=media[1],
            flash=flash,
            name=lambda staff_id: self._name(c, staff_id),
            now_ms=c.now_ms,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def _error(self, c: Ctx, status: int, message: str) -> HTMLResponse:
        back = c.request.headers.get("referer", "")
        base = self._base(c.request)
        back = back if back.startswith(str(c.request.base_url).rstrip("/") + base) else ""
        return self._render(
            c, "error.html", status=status, status_code=status, message=message, back=back
        )

    def _redirect(self, c: Ctx, path: str, done: str | None = None) -> RedirectResponse:
        url = self._base(c.request) + path + (f"?done={done}" if done else "")
        return RedirectResponse(url, status_code=303)

    def _media_prefs(self, staff_id: str) -> tuple[bool, bool]:
        prefs = self.prefs.get(staff_id)
        blur = self.blur_default if prefs.blur is None else prefs.blur
        grey = self.greyscale_default if prefs.greyscale is None else prefs.greyscale
        return blur, grey

    # --- public -------------------------------------------------------------------------------

    def h_static(self, c: Ctx) -> Response:
        name = c.request.path_params["name"]
        if name not in self.static:
            raise NotFoundError("no such file")
        body, media_type = self.static[name]
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

    def _pre(self, c: Ctx) -> tuple[str, bool]:
        pre = c.request.cookies.get(PRE_COOKIE, "")
        if len(pre) < 32:
            return secrets.token_urlsafe(32), True
        return pre, False

    def _login_page(self, c: Ctx, template: str, status: int = 200, **values: Any) -> Response:
        pre, new = self._pre(c)
        response = self._render(
            c, template, status=status, login_csrf=csrf_token(self.secret, "pre:" + pre), **values
        )
        if new:
            self._set_cookie(response, c.request, PRE_COOKIE, pre)
        return response

    def h_login_form(self, c: Ctx) -> Response:
        expired = c.request.query_params.get("expired") == "1"
        return self._login_page(c, "login.html", message=_expired_text(True) if expired else None)

    def h_login_password(self, c: Ctx) -> Response:
        username = c.field("username").strip()[:64]
        password = c.field("password")[:256]
        if not username or not password:
            return self._login_page(c, "login.html", 400, message="Enter a username and password.")
        handle = self.pending.put(username, password, c.now_ms)
        response = self._redirect(c, "/login/totp")
        self._set_cookie(response, c.request, LOGIN_COOKIE, handle, max_age=180)
        return response

    def h_totp_form(self, c: Ctx) -> Response:
        pending = self.pending.peek(c.request.cookies.get(LOGIN_COOKIE), c.now_ms)
        if pending is None:
            return self._redirect(c, "/login")
        return self._login_page(c, "totp.html", username=pending.username)

    def h_login_totp(self, c: Ctx) -> Response:
        pending = self.pending.take(c.request.cookies.get(LOGIN_COOKIE), c.now_ms)
        username = pending.username if pending else c.field("username").strip()[:64]
        password = pending.password if pending else c.field("password")[:256]
        code = c.field("code").strip().replace(" ", "")[:16]
        source = c.request.client.host if c.request.client else ""
        try:
            result = self.ctx.staff.login(username, password, code, now_ms=c.now_ms, source=source)
        except LoginThrottledError as exc:
            response = self._login_page(c, "login.html", 429, message=exc.message)
            response.headers["Retry-After"] = str(max(1, exc.retry_after_s))
        except AuthenticationError:
            response = self._login_page(
                c,
                "login.html",
                401,
                message="Sign-in failed: check the username, password and code, and try again.",
            )
        else:
            response = self._redirect(c, "/")
            self._set_cookie(response, c.request, SESSION_COOKIE, result.token)
        response.delete_cookie(LOGIN_COOKIE, path=self._cookie_path(c.request))
        return response

    # --- signed in ----------------------------------------------------------------------------

    def h_home(self, c: Ctx) -> Response:
        p = c.p
        if p.has(Permission.VIEW_QUEUE):
            return self._redirect(c, "/queues")
        if p.has(Permission.MANAGE_STAFF):
            return self._redirect(c, "/staff")
        if p.has(Permission.VIEW_AUDIT):
            return self._redirect(c, "/audit")
        return self._redirect(c, "/preferences")

    def h_logout(self, c: Ctx) -> Response:
        self.ctx.staff.logout(c.token, now_ms=c.now_ms)
        self.exposure.forget(c.session_id)
        response = self._redirect(c, "/login")
        response.delete_cookie(SESSION_COOKIE, path=self._cookie_path(c.request))
        return response

    def h_preferences(self, c: Ctx) -> Response:
        return self._render(
            c,
            "preferences.html",
            prefs=self.prefs.get(c.p.staff_id),
            org_blur=self.blur_default,
            org_grey=self.greyscale_default,
        )

    def h_save_preferences(self, c: Ctx) -> Response:
        def choice(name: str) -> bool | None:
            return {"on": True, "off": False}.get(c.field(name))

        self.prefs.put(
            c.p.staff_id, Preferences(blur=choice("blur"), greyscale=choice("greyscale"))
        )
        return self._redirect(c, "/preferences", "prefs")

    def h_exposure(self, c: Ctx) -> Response:
        count = self.exposure.add(c.session_id, 1)
        return JSONResponse({"exposure": count})

    # --- queues -------------------------------------------------------------------------------

    def _my_queues(self, p: Principal) -> list[Any]:
        return [q for q in self.ctx.queues.values() if p.can_access_queue(q)]

    def h_queues(self, c: Ctx) -> Response:
        rows = []
        for queue in self._my_queues(c.p):
            summaries = self.ctx.cases.list_queue(c.p, queue.queue_id, now_ms=c.now_ms)
            overdue = sum(1 for s in summaries if s.sla_remaining_ms < 0)
            locked = sum(1 for s in summaries if s.lock_remaining_ms > 0)
            next_due = min((s.sla_remaining_ms for s in summaries), default=None)
            rows.append((queue, len(summaries), overdue, locked, next_due))
        return self._render(c, "queues.html", rows=rows)

    def h_queue(self, c: Ctx) -> Response:
        queue_id = c.request.path_params["queue_id"]
        queue = self.ctx.cases.queue(queue_id)
        summaries = self.ctx.cases.list_queue(c.p, queue_id, now_ms=c.now_ms)
        return self._render(
            c, "queue.html", queue=queue, total=len(summaries), summaries=summaries[:QUEUE_PAGE]
        )

    def h_queue_step(self, c: Ctx) -> Response:
        queue_id = c.request.path_params["queue_id"]
        current = c.request.query_params.get("case", "")
        step = -1 if c.request.query_params.get("dir") == "prev" else 1
        ids = [s.case.case_id for s in self.ctx.cases.list_queue(c.p, queue_id, now_ms=c.now_ms)]
        start = 0 if step > 0 else len(ids) - 1
        index = ids.index(current) + step if current in ids else start
        if 0 <= index < len(ids):
            return self._redirect(c, f"/cases/{ids[index]}")
        return self._redirect(c, f"/queues/{queue_id}", "end")

    # --- case ---------------------------------------------------------------------------------

    def h_case(self, c: Ctx) -> Response:
        case_id = c.request.path_params["case_id"]
        p = c.p
        view = self.ctx.cases.view_case(p, case_id, now_ms=c.now_ms)
        queue = self.ctx.cases.queue(view.case.queue_id)
        reports = []
        if p.has(Permission.VIEW_EVIDENCE):
            checked_queue = self.ctx.cases.queue_for_case(p, case_id)
            for report_view in view.reports:
                reports.append(self._evidence(c, report_view, checked_queue, case_id))
        else:
            reports = [
                _ReportPanel(rv.report, [_Line(rec, None, "", []) for rec in rv.items], "", None)
                for rv in view.reports
            ]
        appeals = [
            (d, a)
            for d in view.decisions
            for a in self.ctx.case_repo.appeals_for_decision(d.decision_id)
        ]
        history = sorted(
            self.ctx.enforcement_history(view.case.subject), key=lambda e: -e.created_ms
        )
        pending: DecisionRecord | None = None
        if view.case.pending_decision_id:
            pending = next(
                (d for d in view.decisions if d.decision_id == view.case.pending_decision_id), None
            )
        return self._render(
            c,
            "case.html",
            view=view,
            case=view.case,
            queue=queue,
            reports=reports,
            appeals=appeals,
            history=history,
            pending=pending,
            decisions=sorted(view.decisions, key=lambda d: d.decided_ms),
            notes=sorted(view.notes, key=lambda n: n.created_ms),
            policies=self.ctx.policies,
            kinds=DECISION_LABELS,
            DecisionKind=DecisionKind,
            DecisionStatus=DecisionStatus,
            CaseState=CaseState,
            holds_lock=view.case.lock_holder == p.staff_id and view.lock_remaining_ms > 0,
            open_state=view.case.state in (CaseState.OPEN, CaseState.PENDING_SECOND_REVIEW),
            assignees=self._assignees(c, queue) if p.has(Permission.ASSIGN_CASE) else [],
        )

    def _assignees(self, c: Ctx, queue: Any) -> list[tuple[str, str]]:
        out = []
        for account in self.ctx.list_staff():
            if account.disabled:
                continue
            principal = self.ctx.staff.principal_for(account.staff_id)
            if principal.has(Permission.CLAIM_CASE) and principal.can_access_queue(queue):
                out.append((account.staff_id, account.username))
        return out

    def _evidence(self, c: Ctx, report_view: Any, queue: Any, case_id: str) -> _ReportPanel:
        report = report_view.report
        opened: dict[str, bytes] = {}
        ids: dict[str, str] = {}
        withheld = None
        for record in self.ctx.vault.records_for_report(report.report_id):
            try:
                evidence = self.ctx.vault.open(
                    record.evidence_id,
                    principal=c.p,
                    queue=queue,
                    case_id=case_id,
                    purpose=EVIDENCE_PURPOSE,
                    now_ms=c.now_ms,
                )
            except PermissionDeniedError as exc:
                withheld = exc.message
                continue
            except EvidenceExpiredError:
                withheld = "evidence past its retention period"
                continue
            opened[evidence.kind] = evidence.plaintext
            ids[evidence.kind] = evidence.evidence_id
        items: list[ReportItem] = []
        if KIND_MESSAGES in opened:
            try:
                items = decode_items(opened[KIND_MESSAGES])
            except (DecodeError, SafetyInputError):
                withheld = "the stored message record could not be decoded"
        lines = []
        for record in sorted(report_view.items, key=lambda r: r.index):
            item = items[record.index] if record.index < len(items) else None
            body, media = "", []
            if item is not None:
                content = pb.Content()
                try:
                    content.ParseFromString(item.content)
                except Exception:  # protobuf raises its own DecodeError type
                    content = pb.Content()
                if content.HasField("data"):
                    body = content.data.body
                    for j, pointer in enumerate(content.data.attachments):
                        kind = f"attachment:{record.index}:{j}"
                        media.append(
                            _media(
                                kind, ids.get(kind, kind), pointer.content_type, opened.get(kind)
                            )
                        )
            lines.append(_Line(record, item, body, media))
        comment = opened.get("comment", b"").decode("utf-8", "replace")
        return _ReportPanel(report, lines, comment, withheld)

    def _case_id(self, c: Ctx) -> str:
        return str(c.request.path_params["case_id"])

    def h_claim(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.claim(c.p, case_id, now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "claimed")

    def h_release(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.release(c.p, case_id, now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "released")

    def h_note(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.add_note(c.p, case_id, c.field("text"), now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "noted")

    def h_decide(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        try:
            kind = DecisionKind(c.field("kind"))
        except ValueError:
            raise InvalidDecisionError("choose a decision") from None
        until_ms = None
        days_text = c.field("days").strip()
        if kind is DecisionKind.SUSPEND or (kind is DecisionKind.RESTRICT and days_text):
            if not days_text.isdigit() or not 1 <= int(days_text) <= 3650:
                raise InvalidDecisionError("give a period of 1 to 3650 days")
            until_ms = c.now_ms + int(days_text) * DAY_MS
        outcome = self.ctx.cases.decide(
            c.p,
            case_id,
            kind=kind,
            policy_id=c.field("policy"),
            reason=c.field("reason"),
            until_ms=until_ms,
            now_ms=c.now_ms,
        )
        done = "proposed" if outcome.decision.status is DecisionStatus.PROPOSED else "decided"
        return self._redirect(c, f"/cases/{case_id}", done)

    def h_escalate(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.escalate(c.p, case_id, reason=c.field("reason"), now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "escalated")

    def h_confirm(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.confirm(c.p, case_id, reason=c.field("reason"), now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "confirmed")

    def h_reject(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.reject(c.p, case_id, reason=c.field("reason"), now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "rejected")

    def h_assign(self, c: Ctx) -> Response:
        case_id = self._case_id(c)
        self.ctx.cases.assign(c.p, case_id, c.field("assignee"), now_ms=c.now_ms)
        return self._redirect(c, f"/cases/{case_id}", "assigned")

    # --- appeals ------------------------------------------------------------------------------

    def h_appeals(self, c: Ctx) -> Response:
        rows = []
        for queue in self._my_queues(c.p):
            for summary in self.ctx.cases.list_queue(c.p, queue.queue_id, now_ms=c.now_ms):
                if summary.case.state is not CaseState.APPEALED:
                    continue
                for decision in self.ctx.case_repo.decisions_for_case(summary.case.case_id):
                    for appeal in self.ctx.case_repo.appeals_for_decision(decision.decision_id):
                        if appeal.status.value == "open":
                            own = c.p.staff_id in {decision.decided_by, decision.second_reviewer}
                            rows.append((summary, decision, appeal, own))
        return self._render(c, "appeals.html", rows=rows)

    def h_decide_appeal(self, c: Ctx) -> Response:
        appeal_id = c.request.path_params["appeal_id"]
        outcome = c.field("outcome")
        if outcome not in ("uphold", "overturn"):
            raise InvalidDecisionError("choose uphold or overturn")
        appeal = self.ctx.case_repo.get_appeal(appeal_id)
        if appeal is None:
            raise NotFoundError("no such appeal")
        self.ctx.cases.decide_appeal(
            c.p,
            appeal_id,
            overturn=outcome == "overturn",
            reason=c.field("reason"),
            now_ms=c.now_ms,
        )
        return self._redirect(c, f"/cases/{appeal.case_id}", "appeal")

    # --- audit --------------------------------------------------------------------------------

    def h_audit(self, c: Ctx) -> Response:
        repo = self.ctx.audit.repository
        head = repo.head()
        last = head.seq if head else 0
        before_text = c.request.query_params.get("before", "")
        before = int(before_text) if before_text.isdigit() else last + 1
        start = max(1, before - AUDIT_PAGE)
        entries = list(itertools.islice(repo.entries(start), max(0, before - start)))
        entries.reverse()
        verification = self.ctx.audit.verify()
        return self._render(
            c,
            "audit.html",
            entries=entries,
            verification=verification,
            last=last,
            anchored=self.ctx.audit.anchor_key is not None,
            older=start if start > 1 else None,
            newer=before + AUDIT_PAGE if before <= last else None,
        )


# --- view models ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Media:
    kind: str
    evidence_id: str
    content_type: str
    size: int
    data_uri: str | None
    available: bool


@dataclass(frozen=True, slots=True)
class _Line:
    record: Any
    item: ReportItem | None
    body: str
    media: list[_Media]


@dataclass(frozen=True, slots=True)
class _ReportPanel:
    report: Any
    lines: list[_Line]
    comment: str
    withheld: str | None


def _media(kind: str, evidence_id: str, content_type: str, data: bytes | None) -> _Media:
    if data is None:
        return _Media(kind, evidence_id, content_type, 0, None, False)
    uri = None
    if content_type in INLINE_IMAGE_TYPES and len(data) <= MAX_INLINE_MEDIA:
        uri = f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")
    return _Media(kind, evidence_id, content_type, len(data), uri, True)


def _session_key(token: str) -> str:
    from tidings.crypto.primitives import sha256

    return sha256(token.encode("utf-8")).hex()


def _expired_text(expired: bool) -> str:
    return (
        "Your session has expired. Sign in again."
        if expired
        else "You are not signed in, or your session has ended. Sign in again."
    )


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
) -> Starlette:
    """The console as an ASGI app to mount under ``/console``.

    ``service_or_context``: a `ConsoleContext`, or the safety service facade (adapted with
    `ConsoleContext.from_service`). ``clock`` returns epoch milliseconds (tests pass a fake).
    ``secret`` keys the CSRF tokens (random per process if omitted: tokens then do not survive
    a restart, sessions do). ``secure_cookies`` None: Secure cookies when the request is HTTPS
    (behind a TLS proxy, pass True). ``blur_default`` / ``greyscale_default``: the
    organisation's media defaults, which each reviewer may override on the preferences page.
    """
    console = Console(
        ConsoleContext.from_service(service_or_context),
        clock=clock,
        secret=secret,
        secure_cookies=secure_cookies,
        blur_default=blur_default,
        greyscale_default=greyscale_default,
    )
    app = console.asgi()
    app.state.console = console
    return app
