"""Appeals: the open appeals of the reviewer's queues, and deciding one (uphold / overturn).

An appeal is decided by someone who took no part in the decision; the list marks the rows the
signed-in reviewer took part in, and `tidings.safety.cases.CaseService.decide_appeal` refuses
them.
"""

from __future__ import annotations

from starlette.responses import Response

from tidings.errors import InvalidDecisionError, NotFoundError
from tidings.safety.cases import AppealStatus, CaseState
from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages
from .cases import accessible_queues

__all__ = ["ROUTES", "AppealPages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/appeals", Permission.DECIDE_APPEAL, "appeals"),
    RouteSpec("POST", "/appeals/{appeal_id}/decide", Permission.DECIDE_APPEAL, "decide_appeal"),
)

OUTCOMES = ("uphold", "overturn")
APPEALED = frozenset({CaseState.APPEALED})


class AppealPages(ContextPages):
    def appeals(self, c: Ctx) -> Response:
        rows = []
        repo = self.ctx.case_repo
        for queue in accessible_queues(self.ctx, c.p):
            appealed = self.ctx.cases.list_queue(
                c.p, queue.queue_id, now_ms=c.now_ms, states=APPEALED
            )
            for summary in appealed:
                for decision in repo.decisions_for_case(summary.case.case_id):
                    for appeal in repo.appeals_for_decision(decision.decision_id):
                        if appeal.status == AppealStatus.OPEN:
                            own = c.p.staff_id in {decision.decided_by, decision.second_reviewer}
                            rows.append((summary, decision, appeal, own))
        return self.kit.render(c, "appeals.html", rows=rows)

    def decide_appeal(self, c: Ctx) -> Response:
        """Raises: InvalidDecisionError (no outcome chosen), NotFoundError (no such appeal),
        and every refusal of `CaseService.decide_appeal`."""
        appeal_id = c.path_param("appeal_id")
        outcome = c.field("outcome")
        if outcome not in OUTCOMES:
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
        return self.kit.redirect(c, f"/cases/{appeal.case_id}", "appeal")
