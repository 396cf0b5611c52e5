"""Lawful requests (issue 11; legal, `Permission.HANDLE_LAWFUL_REQUESTS`;
`tidings.safety.lawful`, docs/operations.md "Lawful requests"):

- ``/lawful``: every request in `by_urgency` order (open emergencies first, then by due date)
  with a live countdown to its due date, and the staff intake form;
- ``POST /lawful/new``: take a request in (`LawfulRequestService.receive`). The answer is the
  new request's page rendered directly (no redirect), showing the verification token once
  with ``Cache-Control: no-store``: the token is never stored, never put in a URL and never
  shown again;
- ``/lawful/{request_id}``: everything about one request (as ``tidings admin lawful show``
  prints it), its audit trail, its hold, the scope preview while in review, and a form for
  exactly each of `allowed_actions` (plus the non-disclosure order before delivery);
- ``POST /lawful/{request_id}/<action>``: verify, review, scope, reject, produce, deliver,
  close, ndo; each redirects back with a `FLASH` message;
- ``GET /lawful/{request_id}/package``: the stored package archive as an attachment.

Every view and action is audited under the signed-in staff member by the service, which also
checks the permission again; every refusal is the service's typed error on the error page
(nothing changed). Dates are entered as ``YYYY-MM-DD`` (UTC) and mean the end of that day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.responses import Response

from tidings.errors import InvalidLawfulRequestError
from tidings.safety.audit import AuditEntry
from tidings.safety.lawful import LawfulRequestService
from tidings.safety.lawful_model import (
    LawfulRequest,
    RequestAction,
    RequestState,
    RequestType,
    allowed_actions,
    by_urgency,
)
from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages, configured

__all__ = ["ROUTES", "LawfulPages", "end_of_day_ms"]

_P = Permission.HANDLE_LAWFUL_REQUESTS
_ONE = "/lawful/{request_id}"

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/lawful", _P, "lawful_requests"),
    RouteSpec("POST", "/lawful/new", _P, "receive_lawful"),
    RouteSpec("GET", _ONE, _P, "lawful_request"),
    RouteSpec("GET", _ONE + "/package", _P, "lawful_package"),
    RouteSpec("POST", _ONE + "/verify", _P, "verify_lawful"),
    RouteSpec("POST", _ONE + "/resend", _P, "resend_lawful"),
    RouteSpec("POST", _ONE + "/review", _P, "review_lawful"),
    RouteSpec("POST", _ONE + "/scope", _P, "scope_lawful"),
    RouteSpec("POST", _ONE + "/reject", _P, "reject_lawful"),
    RouteSpec("POST", _ONE + "/produce", _P, "produce_lawful"),
    RouteSpec("POST", _ONE + "/deliver", _P, "deliver_lawful"),
    RouteSpec("POST", _ONE + "/close", _P, "close_lawful"),
    RouteSpec("POST", _ONE + "/ndo", _P, "ndo_lawful"),
)

_NDO_STATES = frozenset(
    {RequestState.RECEIVED, RequestState.VERIFIED, RequestState.IN_REVIEW,
     RequestState.SCOPED, RequestState.PRODUCED}
)
"""States a non-disclosure order may still be recorded in (the service's rule: before
delivery, and not on a closed or rejected request, which is never delivered)."""


def end_of_day_ms(text: str, what: str) -> int:
    """The last millisecond (UTC) of the day ``text`` names (``YYYY-MM-DD``, a date input).

    Raises: `InvalidLawfulRequestError` for anything else."""
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidLawfulRequestError(f"{what} is a date, YYYY-MM-DD") from None
    return int((day + timedelta(days=1)).timestamp() * 1000) - 1


class LawfulPages(ContextPages):
    def _service(self) -> LawfulRequestService:
        return configured(self.ctx.lawful, "lawful requests")

    def _back(self, c: Ctx, done: str) -> Response:
        return self.kit.redirect(c, f"/lawful/{c.path_param('request_id')}", done)

    # --- list and intake ------------------------------------------------------------------

    def lawful_requests(self, c: Ctx) -> Response:
        service = self._service()
        rows = by_urgency(service.list_as(c.p.staff_id))
        return self.kit.render(
            c, "lawful_requests.html", rows=rows, kinds=list(RequestType),
            categories=service.categories(), RequestType=RequestType,
        )

    def receive_lawful(self, c: Ctx) -> Response:
        """Take a request in and show its page with the verification token, once.

        Raises: every refusal of `LawfulRequestService.receive` (`InvalidLawfulRequestError`
        for a field out of range, an unparsable due date); nothing is stored then."""
        service = self._service()
        due = c.field("due_date").strip()
        justification = c.field("emergency_justification").strip()
        intake = service.receive(
            c.p,
            agency=c.field("agency"),
            officer_name=c.field("officer_name"),
            officer_email=c.field("officer_email"),
            country=c.field("country"),
            case_number=c.field("case_number"),
            legal_basis=c.field("legal_basis"),
            kind=c.field("kind"),
            account=c.field("account"),
            scope=c.fields("scope"),
            due_ms=end_of_day_ms(due, "the due date") if due else None,
            emergency_justification=justification or None,
        )
        response = self._page(c, intake.request, token=intake.token, status=201)
        response.headers["Cache-Control"] = "no-store"
        return response

    # --- one request ----------------------------------------------------------------------

    def lawful_request(self, c: Ctx) -> Response:
        """Raises: `NotFoundError` for an unknown request."""
        request = self._service().get(c.p, c.path_param("request_id"))
        return self._page(c, request)

    def _trail(self, c: Ctx, request_id: str) -> list[AuditEntry]:
        """The request's audit entries (target ``lawful:<id>``), oldest first, for staff who
        may read the audit log (the log has no lookup by target: this reads it through)."""
        if not c.p.has(Permission.VIEW_AUDIT):
            return []
        target = f"lawful:{request_id}"
        return [e for e in self.ctx.audit.repository.entries() if e.target == target]

    def _page(
        self, c: Ctx, request: LawfulRequest, *, token: str | None = None, status: int = 200
    ) -> Response:
        service = self._service()
        actions = allowed_actions(request)
        preview = (
            service.plan_scope(request) if RequestAction.SCOPE in actions else None
        )
        titles = {cat.key: cat.title for cat in service.categories()}
        return self.kit.render(
            c,
            "lawful_request.html",
            status=status,
            r=request,
            data=request.to_json(),
            token=token,
            actions={a.value for a in actions},
            preview=preview,
            titles=titles,
            ndo_open=request.state in _NDO_STATES,
            trail=self._trail(c, request.request_id),
            has_package=request.manifest_sha256 is not None,
        )

    def lawful_package(self, c: Ctx) -> Response:
        """The package archive (audited). Raises: `NotFoundError` when none is stored."""
        stored = self._service().package(c.p, c.path_param("request_id"))
        headers = {
            "Content-Disposition": f'attachment; filename="{stored.filename}"',
            "Cache-Control": "no-store",
        }
        return Response(stored.archive, media_type="application/zip", headers=headers)

    # --- actions --------------------------------------------------------------------------

    def verify_lawful(self, c: Ctx) -> Response:
        """Legal enters the token the officer presented. Raises: `LawfulVerificationError`
        (wrong, used or expired token; unlisted domain not accepted),
        `LawfulRequestStateError`."""
        self._service().verify(
            c.path_param("request_id"), c.field("token").strip(), actor=c.p,
            accept_unlisted_domain=c.field("accept_unlisted_domain") == "yes",
        )
        return self._back(c, "lawful_verified")

    def resend_lawful(self, c: Ctx) -> Response:
        """Mail a new verification link (the old token stops working) and show the new token
        once. Raises: `LawfulRequestStateError` once verified, `MailDeliveryError`."""
        intake = self._service().resend_verification(c.p, c.path_param("request_id"))
        response = self._page(c, intake.request, token=intake.token)
        response.headers["Cache-Control"] = "no-store"
        return response

    def review_lawful(self, c: Ctx) -> Response:
        self._service().review(c.p, c.path_param("request_id"))
        return self._back(c, "lawful_reviewed")

    def scope_lawful(self, c: Ctx) -> Response:
        """Keep the checked categories of those the preview keeps (the service records its
        own reason for the rest, and "narrowed by legal" for what was unchecked). Raises:
        `InvalidLawfulRequestError` when nothing is left or an emergency request has no
        justification; `NotFoundError`."""
        service = self._service()
        request_id = c.path_param("request_id")
        chosen = c.fields("categories")
        justification = c.field("justification").strip()
        service.scope(c.p, request_id, categories=chosen, justification=justification or None)
        return self._back(c, "lawful_scoped")

    def reject_lawful(self, c: Ctx) -> Response:
        self._service().reject(c.p, c.path_param("request_id"), reason=c.field("reason"))
        return self._back(c, "lawful_rejected")

    def produce_lawful(self, c: Ctx) -> Response:
        """Raises: `LawfulConfigError` without a signing key."""
        self._service().produce(c.p, c.path_param("request_id"))
        return self._back(c, "lawful_produced")

    def deliver_lawful(self, c: Ctx) -> Response:
        self._service().deliver(c.p, c.path_param("request_id"))
        return self._back(c, "lawful_delivered")

    def close_lawful(self, c: Ctx) -> Response:
        self._service().close(c.p, c.path_param("request_id"))
        return self._back(c, "lawful_closed")

    def ndo_lawful(self, c: Ctx) -> Response:
        """Raises: `InvalidLawfulRequestError` for a bad or past end date, a missing
        reference, or a request already delivered."""
        self._service().record_ndo(
            c.p, c.path_param("request_id"),
            until_ms=end_of_day_ms(c.field("until_date"), "the order's end date"),
            reference=c.field("reference"),
        )
        return self._back(c, "lawful_ndo")
