"""The case lifecycle as one table: ``TRANSITIONS[(state, action)] -> state``.

Every change of `CaseState` goes through `next_state`; a pair not in the table is refused with
`InvalidCaseStateError`. The service keeps its own, more specific guards (and messages) in
front, so the table is the single statement of *which* moves exist and the last line of
defence against one that does not.

The lock-release rule lives here too, once: every state transition releases the case lock
(`RELEASE_LOCK`) — whoever held it claimed it to do exactly the work that the transition
ends — and so does moving a case to another queue (access was granted under the old
queue's rules). Claiming and releasing a lock are not state transitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from tidings.errors import InvalidCaseStateError
from tidings.safety.case_model import CaseState, DecisionKind

__all__ = [
    "RELEASE_LOCK",
    "TRANSITIONS",
    "CaseAction",
    "final_action",
    "next_state",
]


class CaseAction(StrEnum):
    """What is done to a case (the column of the transition table)."""

    PROPOSE = "propose"  # BAN / ESCALATE_REFERRAL on an open case: awaits a second reviewer
    ESCALATE = "escalate"  # ask for a second reviewer without proposing
    REJECT = "reject"  # second reviewer rejects the proposal
    DISMISS = "dismiss"  # a final DISMISS decision
    ENFORCE = "enforce"  # a final WARN / RESTRICT / SUSPEND / BAN decision (or upheld appeal)
    REFER = "refer"  # a final ESCALATE_REFERRAL (or its appeal upheld)
    APPEAL = "appeal"  # the enforced account files an appeal
    OVERTURN = "overturn"  # the appeal is granted
    VOID = "void"  # every report of the case was voided


_S = CaseState
_A = CaseAction

TRANSITIONS: Final[Mapping[tuple[CaseState, CaseAction], CaseState]] = {
    (_S.OPEN, _A.PROPOSE): _S.PENDING_SECOND_REVIEW,
    (_S.OPEN, _A.ESCALATE): _S.PENDING_SECOND_REVIEW,
    (_S.OPEN, _A.DISMISS): _S.DISMISSED,
    (_S.OPEN, _A.ENFORCE): _S.ACTIONED,
    (_S.OPEN, _A.VOID): _S.VOIDED,
    # A second opinion (escalated case) or a confirmed proposal is final at once.
    (_S.PENDING_SECOND_REVIEW, _A.DISMISS): _S.DISMISSED,
    (_S.PENDING_SECOND_REVIEW, _A.ENFORCE): _S.ACTIONED,
    (_S.PENDING_SECOND_REVIEW, _A.REFER): _S.REFERRED,
    (_S.PENDING_SECOND_REVIEW, _A.REJECT): _S.OPEN,
    (_S.PENDING_SECOND_REVIEW, _A.VOID): _S.VOIDED,
    # Only enforcing decisions can be appealed (a dismissal cannot), and only once.
    (_S.ACTIONED, _A.APPEAL): _S.APPEALED,
    (_S.REFERRED, _A.APPEAL): _S.APPEALED,
    (_S.APPEALED, _A.ENFORCE): _S.ACTIONED,
    (_S.APPEALED, _A.REFER): _S.REFERRED,
    (_S.APPEALED, _A.OVERTURN): _S.OVERTURNED,
}
"""Every move a case can make. DISMISSED, VOIDED and OVERTURNED are terminal."""

RELEASE_LOCK: Final[Mapping[str, object]] = {"lock_holder": None, "lock_expires_ms": 0}
"""The `CaseRecord` fields every transition (and a queue move) resets: the lock is dropped."""


def final_action(kind: DecisionKind) -> CaseAction:
    """The action a *final* decision of ``kind`` performs (the state it closes the case in)."""
    if kind is DecisionKind.DISMISS:
        return CaseAction.DISMISS
    if kind is DecisionKind.ESCALATE_REFERRAL:
        return CaseAction.REFER
    return CaseAction.ENFORCE


def next_state(state: CaseState, action: CaseAction) -> CaseState:
    """The state ``action`` moves a case in ``state`` to.

    Raises:
        InvalidCaseStateError: the table has no such move.
    """
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise InvalidCaseStateError(f"a case that is {state.value} cannot {action.value}") from None
