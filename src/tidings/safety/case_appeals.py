"""Appeals of case decisions: filing (the enforced account) and deciding (a different
reviewer holding the case lock). Part of `tidings.safety.cases.CaseService`."""

from __future__ import annotations

from dataclasses import replace

from tidings.errors import (
    InvalidCaseStateError,
    NotFoundError,
    PermissionDeniedError,
    SafetyInputError,
    SameReviewerError,
)
from tidings.safety.audit import AuditAction
from tidings.safety.case_core import CaseCore, require_text
from tidings.safety.case_lifecycle import CaseAction, final_action
from tidings.safety.case_model import (
    APPEAL_WINDOW_MS,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    AppealRecord,
    AppealStatus,
    CaseState,
    DecisionKind,
    DecisionOutcome,
    DecisionStatus,
    Enforcement,
)
from tidings.safety.staff import Permission, Principal

__all__ = ["CaseAppeals"]


class CaseAppeals(CaseCore):
    """`CaseService`'s appeal methods."""

    def file_appeal(
        self, account: str, decision_id: str, *, statement: str, now_ms: int
    ) -> AppealRecord:
        """The enforced account appeals a final, enforcing decision (once, within 180 days).

        Raises:
            NotFoundError: no such decision.  PermissionDeniedError: not the decision's subject.
            InvalidCaseStateError: not appealable (dismissal, not final, already appealed,
            window passed).  SafetyInputError: over-long statement.
        """
        decision = self._cases.get_decision(decision_id)
        if decision is None:
            raise NotFoundError("no such decision")
        if decision.subject != account:
            raise PermissionDeniedError("only the affected account can appeal")
        if decision.status is not DecisionStatus.FINAL or decision.kind is DecisionKind.DISMISS:
            raise InvalidCaseStateError("this decision cannot be appealed")
        if self._cases.appeals_for_decision(decision_id):
            raise InvalidCaseStateError("this decision was already appealed")
        if now_ms > decision.decided_ms + APPEAL_WINDOW_MS:
            raise InvalidCaseStateError("the appeal window has closed")
        if not isinstance(statement, str) or len(statement) > MAX_NOTE_CHARS:
            raise SafetyInputError(f"the statement is longer than {MAX_NOTE_CHARS} characters")
        case = self._get(decision.case_id)
        appeal = AppealRecord(
            "apl_" + self._ids(), decision_id, case.case_id, account, now_ms, statement
        )
        self._cases.add_appeal(appeal)
        self._transition(case, CaseAction.APPEAL, now_ms)
        self._audit.append(
            actor=f"account:{account}",
            action=AuditAction.APPEAL_FILED,
            target=f"case:{case.case_id}",
            now_ms=now_ms,
            details={"appeal": appeal.appeal_id, "decision": decision_id},
        )
        return appeal

    def decide_appeal(
        self,
        principal: Principal,
        appeal_id: str,
        *,
        overturn: bool,
        reason: str,
        now_ms: int,
    ) -> DecisionOutcome:
        """Decide an appeal. The decider must differ from the decision's author and its second
        reviewer, and hold the case lock. Overturning revokes the decision's enforcements
        (returned in ``revoked`` for the server to lift).

        Raises:
            SameReviewerError, InvalidDecisionError (no reason), InvalidCaseStateError
            (appeal not open), CaseLockedError, NotFoundError, permission errors.
        """
        appeal = self._cases.get_appeal(appeal_id)
        if appeal is None:
            raise NotFoundError("no such appeal")
        case = self._get(appeal.case_id)
        self._access(principal, case, Permission.DECIDE_APPEAL)
        reason = require_text(reason, "reason", MAX_REASON_CHARS)
        if appeal.status is not AppealStatus.OPEN or case.state is not CaseState.APPEALED:
            raise InvalidCaseStateError("the appeal is not open")
        decision = self._cases.get_decision(appeal.decision_id)
        if decision is None:
            raise NotFoundError("the appealed decision is missing")
        if principal.staff_id in {decision.decided_by, decision.second_reviewer}:
            raise SameReviewerError()
        self._require_lock(principal, case, now_ms)
        status = AppealStatus.OVERTURNED if overturn else AppealStatus.UPHELD
        self._cases.update_appeal(
            replace(
                appeal,
                status=status,
                decided_by=principal.staff_id,
                decided_ms=now_ms,
                reason=reason,
            )
        )
        revoked: list[Enforcement] = []
        if overturn:
            for enforcement in self._enforcements.enforcements_for_decision(decision.decision_id):
                if enforcement.revoked_ms is None:
                    self._enforcements.revoke_enforcement(enforcement.enforcement_id, now_ms)
                    revoked.append(replace(enforcement, revoked_ms=now_ms))
        self._transition(
            case, CaseAction.OVERTURN if overturn else final_action(decision.kind), now_ms
        )
        self._audit_on(
            principal.staff_id,
            AuditAction.APPEAL_DECIDED,
            case.case_id,
            now_ms,
            {
                "appeal": appeal_id,
                "outcome": status.value,
                "revoked": [e.enforcement_id for e in revoked],
            },
        )
        return DecisionOutcome(decision, (), tuple(revoked))
