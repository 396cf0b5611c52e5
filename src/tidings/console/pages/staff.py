"""Staff management: accounts, roles, clearance, queue membership, two-person grants.

- ``/staff``: accounts, their held and pending privileges, queue membership; creating an
  account shows its single-use enrolment link once (never a password or a TOTP secret); an
  account that has not enrolled gets a new link on request (the old one stops working). The
  owner enrols through the link on the `tidings.console.pages.auth` pages.
- ``/grants/{id}/approve|reject``: the two-person rule (`tidings.safety.staff`): the page lists
  every pending grant, with the reason when the signed-in admin may not approve it.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from tidings.errors import NotFoundError
from tidings.safety.staff import IssuedEnrolment, Permission, Role, StaffGrant

from ..routing import Ctx, RouteSpec
from .base import ContextPages

__all__ = ["ROUTES", "StaffPages"]

MANAGE = Permission.MANAGE_STAFF

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/staff", MANAGE, "staff"),
    RouteSpec("POST", "/staff", MANAGE, "create_staff"),
    RouteSpec("POST", "/staff/{staff_id}/roles", MANAGE, "staff_roles"),
    RouteSpec("POST", "/staff/{staff_id}/child-safety", MANAGE, "staff_child_safety"),
    RouteSpec("POST", "/staff/{staff_id}/queues", Permission.MANAGE_QUEUES, "staff_queues"),
    RouteSpec("POST", "/staff/{staff_id}/disable", MANAGE, "staff_disable"),
    RouteSpec("POST", "/staff/{staff_id}/enrolment", MANAGE, "staff_enrolment"),
    RouteSpec("POST", "/grants/{grant_id}/approve", MANAGE, "grant_approve"),
    RouteSpec("POST", "/grants/{grant_id}/reject", MANAGE, "grant_reject"),
)


class StaffPages(ContextPages):
    """The staff page and its forms; every change redirects back to it with a flash."""

    def _staff_page(self, c: Ctx, status: int = 200, **values: Any) -> Response:
        accounts = sorted(self.ctx.list_staff(), key=lambda a: a.username)
        memberships = {a.staff_id: self.ctx.staff_repo.queues_of(a.staff_id) for a in accounts}
        grants = self.ctx.staff.pending_grants(c.p)
        pending: dict[str, list[StaffGrant]] = {}
        for grant in grants:
            pending.setdefault(grant.staff_id, []).append(grant)
        blockers = {g.grant_id: self.ctx.staff.approval_blocker(c.p.staff_id, g) for g in grants}
        return self.kit.render(
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
            enrolled={a.staff_id: a.enrolled for a in accounts},
            **values,
        )

    def _with_link(self, c: Ctx, status: int, issued: IssuedEnrolment) -> Response:
        """The staff page showing ``issued``'s enrolment link, on this response only (the
        database keeps its hash)."""
        console_url = str(c.request.base_url).rstrip("/") + self.kit.base(c.request)
        return self._staff_page(c, status, issued=issued, enrol_url=issued.url(console_url))

    def _roles(self, c: Ctx) -> list[Role]:
        known = {r.value for r in Role}
        return [Role(r) for r in c.fields("roles") if r in known]

    def _updated(self, c: Ctx, done: str = "staff") -> Response:
        return self.kit.redirect(c, "/staff", done)

    def staff(self, c: Ctx) -> Response:
        return self._staff_page(c)

    def create_staff(self, c: Ctx) -> Response:
        username = c.field("username").strip()
        issued = self.ctx.staff.create_staff(
            c.p,
            username=username,
            display_name=c.field("display_name").strip() or username,
            roles=self._roles(c),
            child_safety=c.field("child_safety") == "1",
            now_ms=c.now_ms,
        )
        return self._with_link(c, 201, issued)

    def staff_enrolment(self, c: Ctx) -> Response:
        staff_id = c.path_param("staff_id")
        issued = self.ctx.staff.reissue_enrolment(c.p, staff_id, now_ms=c.now_ms)
        return self._with_link(c, 200, issued)

    def staff_roles(self, c: Ctx) -> Response:
        staff_id = c.path_param("staff_id")
        self.ctx.staff.set_roles(c.p, staff_id, self._roles(c), now_ms=c.now_ms)
        return self._updated(c)

    def staff_child_safety(self, c: Ctx) -> Response:
        granted = c.field("granted") == "1"
        staff_id = c.path_param("staff_id")
        self.ctx.staff.set_child_safety(c.p, staff_id, granted, now_ms=c.now_ms)
        return self._updated(c)

    def staff_queues(self, c: Ctx) -> Response:
        """Set the account's queues to the form's (each joined / left queue audited).

        Raises: NotFoundError (no such account), and the refusals of `add_to_queue`."""
        staff_id = c.path_param("staff_id")
        wanted = set(c.fields("queues"))
        current = self.ctx.staff_repo.queues_of(staff_id)
        if self.ctx.staff_repo.get_staff(staff_id) is None:
            raise NotFoundError("no such staff account")
        for queue_id in sorted(wanted - current):
            self.ctx.staff.add_to_queue(c.p, staff_id, queue_id, now_ms=c.now_ms)
        for queue_id in sorted(current - wanted):
            self.ctx.staff.remove_from_queue(c.p, staff_id, queue_id, now_ms=c.now_ms)
        return self._updated(c)

    def staff_disable(self, c: Ctx) -> Response:
        self.ctx.staff.disable(c.p, c.path_param("staff_id"), now_ms=c.now_ms)
        return self._updated(c)

    def grant_approve(self, c: Ctx) -> Response:
        self.ctx.staff.approve_grant(c.p, c.path_param("grant_id"), now_ms=c.now_ms)
        return self._updated(c, "approved")

    def grant_reject(self, c: Ctx) -> Response:
        self.ctx.staff.reject_grant(c.p, c.path_param("grant_id"), now_ms=c.now_ms)
        return self._updated(c, "grant_rejected")
