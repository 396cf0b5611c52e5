"""Referrals to NCMEC's CyberTipline (`tidings.safety.referrals`, docs/referrals.md):
``/referrals`` lists them (legal and leads, `Permission.APPROVE_REFERRAL`) with a form to
prepare one from a referred case (legal, `Permission.MAKE_REFERRAL`); ``/referrals/{id}``
shows one — what it reports, per file whether staff viewed it, every submission step, the
hold — with the actions its state allows: approve (the second person), submit, retract,
reopen. Every view and action is audited under the signed-in staff member by the service,
which also checks the clearance and the two-person rule; the route permission is the first
gate only."""

from __future__ import annotations

from starlette.responses import Response

from tidings.safety.cybertip_client import ReferralState
from tidings.safety.referral_records import Approval
from tidings.safety.referrals import ReferralService
from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages, configured

__all__ = ["ROUTES", "ReferralPages"]

_ONE = "/referrals/{referral_id}"

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/referrals", Permission.APPROVE_REFERRAL, "referrals"),
    RouteSpec("POST", "/referrals/prepare", Permission.MAKE_REFERRAL, "prepare_referral"),
    RouteSpec("GET", _ONE, Permission.APPROVE_REFERRAL, "referral"),
    RouteSpec("POST", _ONE + "/approve", Permission.APPROVE_REFERRAL, "approve_referral"),
    RouteSpec("POST", _ONE + "/submit", Permission.MAKE_REFERRAL, "submit_referral"),
    RouteSpec("POST", _ONE + "/retract", Permission.MAKE_REFERRAL, "retract_referral"),
    RouteSpec("POST", _ONE + "/reopen", Permission.MAKE_REFERRAL, "reopen_referral"),
)

LIST_LIMIT = 200


class ReferralPages(ContextPages):
    def _service(self) -> ReferralService:
        return configured(self.ctx.referrals, "referrals")

    def referrals(self, c: Ctx) -> Response:
        rows = self._service().list_referrals(c.p, limit=LIST_LIMIT)
        return self.kit.render(c, "referrals.html", rows=rows, case_id=c.query("case"))

    def referral(self, c: Ctx) -> Response:
        service = self._service()
        view = service.view(c.p, c.path_param("referral_id"))
        record = view.record
        state = record.state
        approved = record.approval is Approval.APPROVED or not service.policy.two_person
        return self.kit.render(
            c,
            "referral.html",
            view=view,
            data=view.to_json(),
            can_approve=record.approval is Approval.DRAFT
            and state is ReferralState.PENDING
            and record.prepared_by != c.p.staff_id,
            can_submit=c.p.has(Permission.MAKE_REFERRAL)
            and approved
            and state in {ReferralState.PENDING, ReferralState.OPEN, ReferralState.SUBMITTING},
            can_retract=c.p.has(Permission.MAKE_REFERRAL)
            and state in {ReferralState.PENDING, ReferralState.OPEN},
            can_reopen=c.p.has(Permission.MAKE_REFERRAL)
            and state in {ReferralState.SUBMIT_UNCERTAIN, ReferralState.EXPIRED},
            two_person=service.policy.two_person,
        )

    def prepare_referral(self, c: Ctx) -> Response:
        """Raises: every refusal of `ReferralService.prepare` (NotFoundError for an empty or
        unknown case id)."""
        record = self._service().prepare(c.p, c.field("case_id").strip())
        return self.kit.redirect(c, f"/referrals/{record.referral_id}", "referral_prepared")

    def approve_referral(self, c: Ctx) -> Response:
        referral_id = c.path_param("referral_id")
        self._service().approve(c.p, referral_id)
        return self.kit.redirect(c, f"/referrals/{referral_id}", "referral_approved")

    def submit_referral(self, c: Ctx) -> Response:
        """Runs the whole submission (the handler is in a worker thread). A clearinghouse
        failure is shown as its typed error; the referral keeps every step done, and
        submitting again resumes it."""
        referral_id = c.path_param("referral_id")
        self._service().submit(c.p, referral_id)
        return self.kit.redirect(c, f"/referrals/{referral_id}", "referral_submitted")

    def retract_referral(self, c: Ctx) -> Response:
        referral_id = c.path_param("referral_id")
        self._service().retract(c.p, referral_id, reason=c.field("reason"))
        return self.kit.redirect(c, f"/referrals/{referral_id}", "referral_retracted")

    def reopen_referral(self, c: Ctx) -> Response:
        referral_id = c.path_param("referral_id")
        self._service().reopen(c.p, referral_id, reason=c.field("reason"))
        return self.kit.redirect(c, f"/referrals/{referral_id}", "referral_reopened")
