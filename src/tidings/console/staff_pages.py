"""Console pages for staff management and enrolment (a mixin of `tidings.console.web.Console`).

- ``/staff``: accounts, their held and pending privileges, queue membership; creating an
  account shows its single-use enrolment link once (never a password or a TOTP secret); an
  account that has not enrolled gets a new link on request (the old one stops working).
- ``/grants/{id}/approve|reject``: the two-person rule (`tidings.safety.staff`): the page lists
  every pending grant, with the reason when the signed-in admin may not approve it.
- ``/enrol/{token}`` (no session): the owner sets a password, is shown a fresh TOTP secret,
  and confirms it with a code; an unknown, used, replaced or expired link gets one clear page
  and changes nothing. The token is in the path, so it is never logged: the access log records
  route templates only (`tidings.server.logs`), and every page sends ``Referrer-Policy:
  no-referrer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import HTMLResponse, RedirectResponse, Response

from tidings.errors import EnrolmentTokenError, NotFoundError, SafetyInputError
from tidings.safety.staff import IssuedEnrolment, Role, StaffGrant

from .context import ConsoleContext

if TYPE_CHECKING:
    from .web import Ctx

__all__ = ["StaffPages"]


class StaffPages:
    """The staff and enrolment handlers; `Console` provides the plumbing declared here."""

    ctx: ConsoleContext

    def _render(self, c: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        raise NotImplementedError

    def _redirect(self, c: Ctx, path: str, done: str | None = None) -> RedirectResponse:
        raise NotImplementedError

    def _login_page(self, c: Ctx, template: str, status: int = 200, **values: Any) -> Response:
        raise NotImplementedError

    def _base(self, request: Any) -> str:
        raise NotImplementedError

    # --- staff --------------------------------------------------------------------------------

    def _staff_page(self, c: Ctx, status: int = 200, **values: Any) -> Response:
        accounts = sorted(self.ctx.list_staff(), key=lambda a: a.username)
        memberships = {a.staff_id: self.ctx.staff_repo.queues_of(a.staff_id) for a in accounts}
        grants = self.ctx.staff.pending_grants(c.p)
        pending: dict[str, list[StaffGrant]] = {}
        for grant in grants:
            pending.setdefault(grant.staff_id, []).append(grant)
        blockers = {g.grant_id: self.ctx.staff.approval_blocker(c.p.staff_id, g) for g in grants}
        enrolled = {a.staff_id: a.enrolled for a in accounts}
        return self._render(
            c,
            "staff.html",
            status=status,
            accounts=accounts,
            memberships=memberships,
            roles=list(Role),
            queues=list(self.ctx.queues.values()),
            grants=grants,
            pending=pending,
            pending_roles={
                sid: {g.role for g in gs if g.role is not None} for sid, gs in pending.items()
            },
            pending_clearance={sid for sid, gs in pending.items() if any(not g.role for g in gs)},
            blockers=blockers,
            enrolled=enrolled,
            **values,
        )

    def _link(self, c: Ctx, issued: IssuedEnrolment) -> str:
        return issued.url(str(c.request.base_url).rstrip("/") + self._base(c.request))

    def h_staff(self, c: Ctx) -> Response:
        return self._staff_page(c)

    def h_create_staff(self, c: Ctx) -> Response:
        roles = [Role(r) for r in c.fields("roles") if r in {x.value for x in Role}]
        issued = self.ctx.staff.create_staff(
            c.p,
            username=c.field("username").strip(),
            display_name=c.field("display_name").strip() or c.field("username").strip(),
            roles=roles,
            child_safety=c.field("child_safety") == "1",
            now_ms=c.now_ms,
        )
        # The link is shown on this response only (the database keeps its hash).
        return self._staff_page(c, 201, issued=issued, enrol_url=self._link(c, issued))

    def h_staff_enrolment(self, c: Ctx) -> Response:
        issued = self.ctx.staff.reissue_enrolment(c.p, self._staff_id(c), now_ms=c.now_ms)
        return self._staff_page(c, 200, issued=issued, enrol_url=self._link(c, issued))

    def _staff_id(self, c: Ctx) -> str:
        return str(c.request.path_params["staff_id"])

    def h_staff_roles(self, c: Ctx) -> Response:
        roles = [Role(r) for r in c.fields("roles") if r in {x.value for x in Role}]
        self.ctx.staff.set_roles(c.p, self._staff_id(c), roles, now_ms=c.now_ms)
        return self._redirect(c, "/staff", "staff")

    def h_staff_child_safety(self, c: Ctx) -> Response:
        granted = c.field("granted") == "1"
        self.ctx.staff.set_child_safety(c.p, self._staff_id(c), granted, now_ms=c.now_ms)
        return self._redirect(c, "/staff", "staff")

    def h_staff_queues(self, c: Ctx) -> Response:
        staff_id = self._staff_id(c)
        wanted = set(c.fields("queues"))
        current = self.ctx.staff_repo.queues_of(staff_id)
        if self.ctx.staff_repo.get_staff(staff_id) is None:
            raise NotFoundError("no such staff account")
        for queue_id in sorted(wanted - current):
            self.ctx.staff.add_to_queue(c.p, staff_id, queue_id, now_ms=c.now_ms)
        for queue_id in sorted(current - wanted):
            self.ctx.staff.remove_from_queue(c.p, staff_id, queue_id, now_ms=c.now_ms)
        return self._redirect(c, "/staff", "staff")

    def h_staff_disable(self, c: Ctx) -> Response:
        self.ctx.staff.disable(c.p, self._staff_id(c), now_ms=c.now_ms)
        return self._redirect(c, "/staff", "staff")

    def h_grant_approve(self, c: Ctx) -> Response:
        grant_id = str(c.request.path_params["grant_id"])
        self.ctx.staff.approve_grant(c.p, grant_id, now_ms=c.now_ms)
        return self._redirect(c, "/staff", "approved")

    def h_grant_reject(self, c: Ctx) -> Response:
        grant_id = str(c.request.path_params["grant_id"])
        self.ctx.staff.reject_grant(c.p, grant_id, now_ms=c.now_ms)
        return self._redirect(c, "/staff", "grant_rejected")

    # --- enrolment (no session) ---------------------------------------------------------------

    def _token(self, c: Ctx) -> str:
        return str(c.request.path_params["token"])

    def _enrol_page(self, c: Ctx, status: int, **values: Any) -> Response:
        return self._login_page(c, "enrol.html", status, token=self._token(c), **values)

    def _enrol_invalid(self, c: Ctx, exc: EnrolmentTokenError) -> Response:
        return self._enrol_page(c, 410, stage="invalid", message=exc.message)

    def h_enrol_form(self, c: Ctx) -> Response:
        try:
            account = self.ctx.staff.enrolment_account(self._token(c), now_ms=c.now_ms)
        except EnrolmentTokenError as exc:
            return self._enrol_invalid(c, exc)
        return self._enrol_page(c, 200, stage="password", account=account)

    def h_enrol_password(self, c: Ctx) -> Response:
        token = self._token(c)
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

    def h_enrol_confirm(self, c: Ctx) -> Response:
        token = self._token(c)
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
