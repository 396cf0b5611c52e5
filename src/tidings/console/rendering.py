"""What every console page group shares: templates, redirects, the error page and cookies.

One `PageKit` is built per console and handed to each page object (`tidings.console.pages`),
so a page module holds only its own handlers. Every page is rendered with the signed-in
principal, the session's CSRF token, its remaining time, the reviewer's media settings and
exposure count, and the flash message a redirect asked for (``?done=<key>`` of `FLASH`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tidings.safety.staff import Permission

from .context import ConsoleContext
from .routing import Ctx
from .security import csrf_token
from .state import ExposureStore, PreferenceStore

__all__ = ["FLASH", "PageKit", "template_environment"]

TEMPLATES = Path(__file__).resolve().parent / "templates"

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
    "hold_placed": "Hold placed: the account's records are frozen until it ends.",
    "hold_extended": "Hold extended.",
    "hold_released": "Hold released: normal retention applies again.",
    "end": "End of the queue.",
    "referral_prepared": "Referral prepared: a second person (legal or a lead) approves it.",
    "referral_approved": "Referral approved: legal may submit it.",
    "referral_submitted": "Referral submitted to NCMEC and finished; the evidence is held.",
    "referral_retracted": "Referral retracted.",
    "referral_reopened": "Referral reopened: it may be submitted afresh.",
    "lawful_verified": "Requester verified: the request may be reviewed.",
    "lawful_reviewed": "Legal review started: scope the request or reject it.",
    "lawful_scoped": "Request scoped: what was dropped is recorded with the reasons.",
    "lawful_rejected": "Request rejected; the reason is recorded for the requester.",
    "lawful_produced": "Package produced and signed: download it and deliver it.",
    "lawful_delivered": "Package recorded as delivered; the user notice is scheduled.",
    "lawful_closed": "Request closed.",
    "lawful_ndo": "Non-disclosure order recorded: the user notice waits until it ends.",
}


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


def template_environment() -> Environment:
    """The console's Jinja environment: autoescaping everywhere, the ``ts``/``dur`` filters
    (also for documents rendered outside a request: the transparency report's HTML file)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = _fmt_ts
    env.filters["dur"] = _fmt_duration
    return env


@dataclass(eq=False)
class PageKit:
    """Rendering and response helpers over one console's context and state.

    ``secret`` keys the CSRF tokens; ``secure_cookies`` None means Secure cookies exactly
    when the request is HTTPS; ``media`` holds the reviewers' media settings and the
    organisation's defaults. ``exposure`` is the per-session count of revealed media.
    """

    ctx: ConsoleContext
    _: KW_ONLY
    secret: bytes = field(repr=False)
    secure_cookies: bool | None
    media: PreferenceStore
    exposure: ExposureStore
    env: Environment = field(init=False, repr=False, default_factory=template_environment)

    @staticmethod
    def base(request: Request) -> str:
        """The mount path (``/console``), without a trailing slash."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(self, c: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        p = c.principal
        media = self.media.effective(p.staff_id) if p is not None else (True, True)
        remaining = self.ctx.staff.session_remaining_ms(c.token, now_ms=c.now_ms) if c.token else 0
        html = self.env.get_template(template).render(
            base=self.base(c.request),
            me=p,
            csrf=csrf_token(self.secret, c.token) if c.token else "",
            P=Permission,
            session_remaining_ms=remaining,
            exposure=self.exposure.get(c.session_id) if c.session_id else 0,
            blur=media[0],
            greyscale=media[1],
            flash=FLASH.get(c.query("done")),
            name=lambda staff_id: self.name(c, staff_id),
            now_ms=c.now_ms,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def error(self, c: Ctx, status: int, message: str) -> HTMLResponse:
        """The error page: the typed error's message only, and a Back link to a console page."""
        back = c.request.headers.get("referer", "")
        own = str(c.request.base_url).rstrip("/") + self.base(c.request)
        back = back if back.startswith(own) else ""
        return self.render(
            c, "error.html", status=status, status_code=status, message=message, back=back
        )

    def redirect(self, c: Ctx, path: str, done: str | None = None) -> RedirectResponse:
        """303 to ``path`` under the mount, with the `FLASH` key ``done`` to show there."""
        url = self.base(c.request) + path + (f"?done={done}" if done else "")
        return RedirectResponse(url, status_code=303)

    def cookie_path(self, request: Request) -> str:
        return self.base(request) or "/"

    def set_cookie(
        self,
        response: Response,
        request: Request,
        name: str,
        value: str,
        max_age: int | None = None,
    ) -> None:
        """A console cookie: HttpOnly, SameSite=Strict, scoped to the mount, Secure on HTTPS."""
        secure = self.secure_cookies
        if secure is None:
            secure = request.url.scheme == "https"
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.cookie_path(request),
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    def delete_cookie(self, response: Response, request: Request, name: str) -> None:
        response.delete_cookie(name, path=self.cookie_path(request))

    def name(self, c: Ctx, staff_id: str | None) -> str:
        """A staff member's username for display (cached per request; "—" for none)."""
        if not staff_id:
            return "—"
        if staff_id not in c.names:
            account = self.ctx.staff_repo.get_staff(staff_id)
            c.names[staff_id] = account.username if account is not None else staff_id
        return c.names[staff_id]
