"""Review: the queues, one queue, stepping through it, the case page and the case actions.

Every action is a POST that redirects back to the case with a flash message; the domain
(`tidings.safety.cases.CaseService`) checks queue access, the lock and the four-eyes rule
again, so a refused action becomes the typed error's page (403 / 409), never a half-done one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.responses import Response

from tidings.clock import DAY_MS
from tidings.errors import InvalidDecisionError
from tidings.safety.cases import CaseState, DecisionKind, DecisionRecord, DecisionStatus
from tidings.safety.categories import Queue
from tidings.safety.staff import Permission, Principal

from ..context import ConsoleContext
from ..routing import Ctx, RouteSpec
from .base import ContextPages
from .evidence import detection_panel, report_panel, unopened_panel

__all__ = [
    "CASE_ACTIONS",
    "DECISION_LABELS",
    "QUEUE_PAGE",
    "ROUTES",
    "CasePages",
    "accessible_queues",
]

CASE_ACTIONS: Mapping[str, Permission] = {
    "claim": Permission.CLAIM_CASE,
    "release": Permission.CLAIM_CASE,
    "note": Permission.ADD_NOTE,
    "decide": Permission.DECIDE,
    "escalate": Permission.ESCALATE,
    "confirm": Permission.CONFIRM_DECISION,
    "reject": Permission.CONFIRM_DECISION,
    "assign": Permission.ASSIGN_CASE,
}
"""Each case action is ``POST /cases/{case_id}/<action>``, handled by `CasePages.<action>`,
with the permission it needs."""

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/queues", Permission.VIEW_QUEUE, "queues"),
    RouteSpec("GET", "/queues/{queue_id}", Permission.VIEW_QUEUE, "queue"),
    RouteSpec("GET", "/queues/{queue_id}/step", Permission.VIEW_QUEUE, "queue_step"),
    RouteSpec("GET", "/cases/{case_id}", Permission.VIEW_QUEUE, "case"),
    *(
        RouteSpec("POST", f"/cases/{{case_id}}/{action}", permission, action)
        for action, permission in CASE_ACTIONS.items()
    ),
)

QUEUE_PAGE = 100
"""Most cases one queue page lists (the most urgent first)."""

DECISION_LABELS: Mapping[DecisionKind, tuple[str, str]] = {
    DecisionKind.DISMISS: ("Dismiss", "d"),
    DecisionKind.WARN: ("Warn", "w"),
    DecisionKind.RESTRICT: ("Restrict", "r"),
    DecisionKind.SUSPEND: ("Suspend", "s"),
    DecisionKind.BAN: ("Ban", "b"),
    DecisionKind.ESCALATE_REFERRAL: ("Escalate to referral", "e"),
}
"""Button label and keyboard shortcut of each decision."""

MAX_PERIOD_DAYS = 3650


def accessible_queues(context: ConsoleContext, p: Principal) -> list[Queue]:
    """The queues ``p`` may open (membership together with the child-safety clearance)."""
    return [q for q in context.queues.values() if p.can_access_queue(q)]


class CasePages(ContextPages):
    """Queues, the case view, and claim / release / note / decide / escalate / confirm /
    reject / assign."""

    # --- queues -------------------------------------------------------------------------------

    def queues(self, c: Ctx) -> Response:
        """Every accessible queue with its counts: one GROUP BY for all of them."""
        visible = accessible_queues(self.ctx, c.p)
        counts = self.ctx.cases.queue_counts(
            c.p, [q.queue_id for q in visible], now_ms=c.now_ms
        )
        rows = []
        for queue in visible:
            n = counts[queue.queue_id]
            next_due = None if n.next_due_ms is None else n.next_due_ms - c.now_ms
            rows.append((queue, n.total, n.overdue, n.locked, next_due))
        return self.kit.render(c, "queues.html", rows=rows)

    def queue(self, c: Ctx) -> Response:
        """The `QUEUE_PAGE` most urgent cases (ORDER BY + LIMIT in SQL) and the queue's total."""
        queue_id = c.path_param("queue_id")
        queue = self.ctx.cases.queue(queue_id)
        summaries = self.ctx.cases.list_queue(c.p, queue_id, now_ms=c.now_ms, limit=QUEUE_PAGE)
        total = self.ctx.cases.queue_counts(c.p, [queue_id], now_ms=c.now_ms)[queue_id].total
        return self.kit.render(c, "queue.html", queue=queue, total=total, summaries=summaries)

    def queue_step(self, c: Ctx) -> Response:
        """The next (``dir=prev``: previous) case after ``case`` in queue order; from
        nowhere, the first (last); past either end, the queue with "end of the queue".
        One keyset query, whatever the queue's length."""
        queue_id = c.path_param("queue_id")
        forward = c.query("dir") != "prev"
        found = self.ctx.cases.queue_neighbour(c.p, queue_id, c.query("case"), forward=forward)
        if found is not None:
            return self.kit.redirect(c, f"/cases/{found}")
        return self.kit.redirect(c, f"/queues/{queue_id}", "end")

    # --- the case page ------------------------------------------------------------------------

    def case(self, c: Ctx) -> Response:
        case_id = c.path_param("case_id")
        p = c.p
        view = self.ctx.cases.view_case(p, case_id, now_ms=c.now_ms)
        case = view.case
        queue = self.ctx.cases.queue(case.queue_id)
        checked_queue: Queue | None = None
        if p.has(Permission.VIEW_EVIDENCE):
            checked_queue = self.ctx.cases.queue_for_case(p, case_id)
            reports = [report_panel(self.ctx, c, rv, checked_queue, case_id) for rv in view.reports]
        else:
            reports = [unopened_panel(rv) for rv in view.reports]
        detections = detection_panel(
            self.ctx, c, self.ctx.detection_matches(case_id), checked_queue, case_id
        )
        pending: DecisionRecord | None = None
        if case.pending_decision_id:
            pending = next(
                (d for d in view.decisions if d.decision_id == case.pending_decision_id), None
            )
        history = self.ctx.enforcement_history(case.subject)
        # Preservation and referral state, read without a separate audit entry: the case
        # view itself is audited, and these rows hold no evidence.
        holds = self.ctx.holds.active_for(case.subject) if self.ctx.holds is not None else []
        referrals = (
            self.ctx.referrals.repository.referrals_for_case(case_id)
            if self.ctx.referrals is not None
            else []
        )
        return self.kit.render(
            c,
            "case.html",
            view=view,
            case=case,
            queue=queue,
            reports=reports,
            detections=detections,
            appeals=[
                (d, a)
                for d in view.decisions
                for a in self.ctx.case_repo.appeals_for_decision(d.decision_id)
            ],
            history=sorted(history, key=lambda e: -e.created_ms),
            holds=holds,
            referrals=referrals,
            pending=pending,
            decisions=sorted(view.decisions, key=lambda d: d.decided_ms),
            notes=sorted(view.notes, key=lambda n: n.created_ms),
            policies=self.ctx.policies,
            kinds=DECISION_LABELS,
            DecisionKind=DecisionKind,
            DecisionStatus=DecisionStatus,
            CaseState=CaseState,
            holds_lock=case.lock_holder == p.staff_id and view.lock_remaining_ms > 0,
            open_state=case.state in (CaseState.OPEN, CaseState.PENDING_SECOND_REVIEW),
            assignees=self._assignees(queue) if p.has(Permission.ASSIGN_CASE) else [],
        )

    def _assignees(self, queue: Queue) -> list[tuple[str, str]]:
        """(staff id, username) of everyone active who may claim cases of ``queue``."""
        out = []
        for account in self.ctx.list_staff():
            if account.disabled:
                continue
            principal = self.ctx.staff.principal_for(account.staff_id)
            if principal.has(Permission.CLAIM_CASE) and principal.can_access_queue(queue):
                out.append((account.staff_id, account.username))
        return out

    # --- case actions -------------------------------------------------------------------------

    def _act(
        self, c: Ctx, done: str, action: Callable[..., object], *args: str, **kw: str
    ) -> Response:
        """``action(principal, case_id, *args, now_ms=…, **kw)`` on the path's case, then back
        to the case page with the flash ``done``."""
        case_id = c.path_param("case_id")
        action(c.p, case_id, *args, now_ms=c.now_ms, **kw)
        return self.kit.redirect(c, f"/cases/{case_id}", done)

    def claim(self, c: Ctx) -> Response:
        return self._act(c, "claimed", self.ctx.cases.claim)

    def release(self, c: Ctx) -> Response:
        return self._act(c, "released", self.ctx.cases.release)

    def note(self, c: Ctx) -> Response:
        return self._act(c, "noted", self.ctx.cases.add_note, c.field("text"))

    def decide(self, c: Ctx) -> Response:
        """A decision; a suspension (and a restriction given one) needs a period in days.

        Raises:
            InvalidDecisionError: no known decision kind, or a period outside 1 to 3650 days.
        """
        case_id = c.path_param("case_id")
        try:
            kind = DecisionKind(c.field("kind"))
        except ValueError:
            raise InvalidDecisionError("choose a decision") from None
        until_ms = None
        days_text = c.field("days").strip()
        if kind is DecisionKind.SUSPEND or (kind is DecisionKind.RESTRICT and days_text):
            if not days_text.isdigit() or not 1 <= int(days_text) <= MAX_PERIOD_DAYS:
                raise InvalidDecisionError(f"give a period of 1 to {MAX_PERIOD_DAYS} days")
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
        return self.kit.redirect(c, f"/cases/{case_id}", done)

    def escalate(self, c: Ctx) -> Response:
        return self._act(c, "escalated", self.ctx.cases.escalate, reason=c.field("reason"))

    def confirm(self, c: Ctx) -> Response:
        return self._act(c, "confirmed", self.ctx.cases.confirm, reason=c.field("reason"))

    def reject(self, c: Ctx) -> Response:
        return self._act(c, "rejected", self.ctx.cases.reject, reason=c.field("reason"))

    def assign(self, c: Ctx) -> Response:
        return self._act(c, "assigned", self.ctx.cases.assign, c.field("assignee"))
