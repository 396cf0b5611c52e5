"""Cases, review, decisions, second review, appeals and enforcement records.

A *case* groups every open report about one reported account (the *subject*): a further report
about the same account joins the open case and raises its priority (more distinct reporters,
more boost) instead of adding a new item to the queue; a more severe report re-routes the case
(a child sexual exploitation report moves it into the child-safety queue at once) and tightens
its SLA.

Rules the `CaseService` enforces, on top of the permission matrix and queue access (child-safety
clearance together with membership, `tidings.safety.staff.Principal.require_queue`):

- exclusive locks: changing a case (decide, escalate, confirm, appeal decision) needs the
  caller to hold its unexpired lock; the lock's remaining time is visible to everyone
  (`lock_remaining_ms`); a lead may break a lock;
- every decision names a known policy and a non-empty reason (`InvalidDecisionError`);
- four eyes: BAN and ESCALATE_REFERRAL are proposals until a *different* staff member with
  CONFIRM_DECISION confirms them (`SameReviewerError`); a reviewer may also escalate a case
  for a second reviewer without proposing;
- appeals are decided by someone other than the decision's author and confirmer;
- `void_reporter` voids every report of a bad-faith reporter in one action, closing open cases
  left without reports;
- decisions produce `Enforcement` records (account, kind, until) for the messaging server to
  apply; an overturned appeal revokes them.

Time is passed in; ids come from an injectable source. Every state change is audited.

The model (states, records, repository protocols, views) is `tidings.safety.case_model`, the
state machine `tidings.safety.case_lifecycle`, the in-memory repositories
`tidings.safety.case_memory`; this module re-exports their public names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from tidings.errors import (
    CaseLockedError,
    ConflictError,
    InvalidCaseStateError,
    InvalidDecisionError,
    NotFoundError,
    SafetyInputError,
    SameReviewerError,
)
from tidings.safety.audit import AuditAction
from tidings.safety.case_appeals import CaseAppeals
from tidings.safety.case_core import require_text
from tidings.safety.case_lifecycle import RELEASE_LOCK, CaseAction, final_action
from tidings.safety.case_memory import InMemoryCaseRepository, InMemoryEnforcementRepository
from tidings.safety.case_model import (
    _ENFORCEMENT_OF,
    DEFAULT_LOCK_MS,
    DEFAULT_POLICIES,
    LOCKABLE_STATES,
    MAX_LOCK_MS,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    OPEN_STATES,
    SECOND_REVIEW_KINDS,
    AppealRecord,
    AppealStatus,
    CaseRecord,
    CaseRepository,
    CaseSource,
    CaseState,
    CaseSummary,
    CaseView,
    DecisionKind,
    DecisionOutcome,
    DecisionRecord,
    DecisionStatus,
    Enforcement,
    EnforcementKind,
    EnforcementRepository,
    NoteRecord,
    Policy,
    QueueCounts,
    ReportView,
    VoidResult,
    duplicate_boost,
    lock_remaining_ms,
    queue_order,
    sla_remaining_ms,
)
from tidings.safety.categories import (
    CATEGORY_POLICIES,
    Category,
    ConversationKind,
    Queue,
    RoutingDecision,
    RoutingInput,
)
from tidings.safety.reports import ReportRecord, ReportStatus
from tidings.safety.staff import Permission, Principal

__all__ = [
    "DEFAULT_POLICIES",
    "SECOND_REVIEW_KINDS",
    "AppealRecord",
    "AppealStatus",
    "CaseRecord",
    "CaseRepository",
    "CaseService",
    "CaseSource",
    "CaseState",
    "CaseSummary",
    "CaseView",
    "DecisionKind",
    "DecisionOutcome",
    "DecisionRecord",
    "DecisionStatus",
    "Enforcement",
    "EnforcementKind",
    "EnforcementRepository",
    "InMemoryCaseRepository",
    "InMemoryEnforcementRepository",
    "NoteRecord",
    "Policy",
    "QueueCounts",
    "VoidResult",
    "duplicate_boost",
    "lock_remaining_ms",
    "sla_remaining_ms",
]

# --- the service ----------------------------------------------------------------------------


class CaseService(CaseAppeals):
    """Case lifecycle over repositories. Implements `tidings.safety.reports.CaseSink`.

    Construction and shared helpers are `tidings.safety.case_core.CaseCore`; the appeal
    methods (`file_appeal`, `decide_appeal`) are `tidings.safety.case_appeals.CaseAppeals`."""

    # --- intake (CaseSink) --------------------------------------------------------------------

    def attach_report(self, report: ReportRecord, routing: RoutingInput, *, now_ms: int) -> str:
        """Open a case for the report's subject, or join the open one (raising its priority,
        re-routing it if the new report is more severe).

        Raises:
            ConflictError: concurrent changes kept winning (after retries).
        """
        prior = self._prior_enforcements(report.subject)
        decision = self._router.route(replace(routing, prior_enforcements=prior))

        def join(case: CaseRecord) -> tuple[dict[str, object], bool]:
            reports, reporters = self._reporters(case.case_id, report)
            base = max(case.base_priority, decision.priority)
            changes: dict[str, object] = {
                "report_count": reports,
                "reporter_count": reporters,
                "base_priority": base,
                "priority": base + duplicate_boost(reports, reporters),
            }
            more_severe = (decision.severity, decision.priority) > (
                case.severity,
                CATEGORY_POLICIES[case.category].base_priority,
            )
            if more_severe:
                changes.update(category=routing.category, severity=decision.severity)
            return changes, more_severe and decision.queue_id != case.queue_id

        return self._open_or_join(
            report.subject,
            decision,
            routing.category,
            now_ms=now_ms,
            opened={"report_count": 1, "reporter_count": 1},
            join=join,
            open_details={"report": report.report_id},
            update_details=lambda case, moved: {
                "report": report.report_id,
                "priority": case.priority,
                "queue": case.queue_id,
                "moved": moved,
            },
        )

    def attach_detection(self, subject: str, *, now_ms: int) -> str:
        """One more confirmed image from on-device detection about ``subject``
        (`tidings.safety.detection`): open a case in the child-safety queue (routed as child
        sexual exploitation), or join the subject's open case, moving it into that queue if
        it is elsewhere (dropping its lock and assignee, as for a more severe report).

        Raises:
            ConflictError: concurrent changes kept winning (after retries).
        """
        category = Category.CHILD_SEXUAL_EXPLOITATION
        decision = self._router.route(
            RoutingInput(
                category=category,
                conversation_kind=ConversationKind.DIRECT,
                has_attachments=True,
                prior_enforcements=self._prior_enforcements(subject),
            )
        )

        def join(case: CaseRecord) -> tuple[dict[str, object], bool]:
            changes: dict[str, object] = {
                "base_priority": max(case.base_priority, decision.priority),
                "priority": max(case.priority, decision.priority),
            }
            if (decision.severity, decision.priority) > (case.severity, case.base_priority):
                changes.update(category=category, severity=decision.severity)
            return changes, decision.queue_id != case.queue_id

        return self._open_or_join(
            subject,
            decision,
            category,
            now_ms=now_ms,
            opened={"report_count": 0, "reporter_count": 0, "source": CaseSource.DETECTION},
            join=join,
            open_details={"source": "detection"},
            update_details=lambda case, moved: {
                "source": "detection",
                "queue": case.queue_id,
                "moved": moved,
            },
        )

    def _prior_enforcements(self, subject: str) -> int:
        """How many enforcements of ``subject`` are not revoked (routing weighs them)."""
        return sum(
            1 for e in self._enforcements.enforcements_for_account(subject) if e.revoked_ms is None
        )

    def _open_or_join(
        self,
        subject: str,
        decision: RoutingDecision,
        category: Category,
        *,
        now_ms: int,
        opened: Mapping[str, object],
        join: Callable[[CaseRecord], tuple[dict[str, object], bool]],
        open_details: Mapping[str, object],
        update_details: Callable[[CaseRecord, bool], dict[str, object]],
    ) -> str:
        """The intake loop both `attach_report` and `attach_detection` run: open a case for
        ``subject`` as ``decision`` routes it (with the ``opened`` fields: counts, source) or
        join its open case — ``join(case)`` gives the changes and whether the case moves
        queue; the SLA only ever tightens, and a move drops the lock and the assignee (they
        were given access under the old queue's rules). Audited by ``system``: the opening
        with the queue, the category and ``open_details``, an update with
        ``update_details(saved case, moved)``. A lost race (another node opened or changed
        the case) is retried, up to 8 times.

        Raises:
            ConflictError: concurrent changes kept winning.
        """
        for _ in range(8):
            case = self._cases.open_case_for_subject(subject)
            if case is None:
                case = CaseRecord(
                    case_id="case_" + self._ids(),
                    subject=subject,
                    queue_id=decision.queue_id,
                    category=category,
                    severity=decision.severity,
                    base_priority=decision.priority,
                    priority=decision.priority,
                    state=CaseState.OPEN,
                    created_ms=now_ms,
                    updated_ms=now_ms,
                    sla_due_ms=now_ms + decision.sla_ms,
                    **opened,  # type: ignore[arg-type]
                )
                try:
                    self._cases.add_case(case)
                except ConflictError:
                    continue
                self._audit_on(
                    "system",
                    AuditAction.CASE_OPEN,
                    case.case_id,
                    now_ms,
                    {"queue": case.queue_id, "category": category.value, **open_details},
                )
                return case.case_id
            changes, moved = join(case)
            changes["sla_due_ms"] = min(case.sla_due_ms, now_ms + decision.sla_ms)
            if moved:
                changes.update(RELEASE_LOCK, queue_id=decision.queue_id, assignee=None)
            try:
                case = self._save(case, now_ms, **changes)
            except ConflictError:
                continue
            self._audit_on(
                "system", AuditAction.CASE_UPDATE, case.case_id, now_ms, update_details(case, moved)
            )
            return case.case_id
        raise ConflictError("case changed concurrently; retry")

    # --- reading ------------------------------------------------------------------------------

    def list_queue(
        self,
        principal: Principal,
        queue_id: str,
        *,
        now_ms: int,
        limit: int | None = None,
        offset: int = 0,
        states: frozenset[CaseState] = LOCKABLE_STATES,
    ) -> list[CaseSummary]:
        """Cases of a queue in ``states`` (the lockable ones: open, pending second review,
        appealed), most urgent first (`queue_order`); with ``limit``, at most that many from
        ``offset`` (bounded in SQL), else all.

        Raises:
            PermissionDeniedError / ChildSafetyPermissionError: no VIEW_QUEUE or no access.
        """
        self._require_queue(principal, queue_id)
        if limit is None:
            cases = sorted(self._cases.cases_in_queue(queue_id, states), key=queue_order)
        else:
            cases = self._cases.queue_page(queue_id, states, limit=limit, offset=offset)
        return [
            CaseSummary(c, lock_remaining_ms(c, now_ms), sla_remaining_ms(c, now_ms)) for c in cases
        ]

    def _require_queue(self, principal: Principal, queue_id: str) -> None:
        principal.require(Permission.VIEW_QUEUE)
        principal.require_queue(self.queue(queue_id))

    def queue_counts(
        self, principal: Principal, queue_ids: Sequence[str], *, now_ms: int
    ) -> dict[str, QueueCounts]:
        """`QueueCounts` of the listed (lockable) cases of each queue, one query for all;
        an empty queue gets zeros.

        Raises: as `list_queue`, for any of ``queue_ids``.
        """
        for queue_id in queue_ids:
            self._require_queue(principal, queue_id)
        found = self._cases.queue_counts(queue_ids, LOCKABLE_STATES, now_ms)
        return {q: found.get(q, QueueCounts()) for q in queue_ids}

    def queue_neighbour(
        self, principal: Principal, queue_id: str, case_id: str, *, forward: bool
    ) -> str | None:
        """The id of the case after (``forward``) or before ``case_id`` in the queue's
        order; when ``case_id`` is not listed in that queue, the first (last) case. None past
        either end or in an empty queue.

        Raises: as `list_queue`.
        """
        self._require_queue(principal, queue_id)
        current = self._cases.get_case(case_id) if case_id else None
        if current is not None and (
            current.queue_id != queue_id or current.state not in LOCKABLE_STATES
        ):
            current = None
        found = self._cases.queue_neighbour(queue_id, LOCKABLE_STATES, current, forward=forward)
        return found.case_id if found is not None else None

    def view_case(self, principal: Principal, case_id: str, *, now_ms: int) -> CaseView:
        """Everything about a case except evidence content (which `EvidenceVault.open` gives,
        audited). Viewing the metadata is itself audited (it is user data).

        Raises:
            NotFoundError, PermissionDeniedError, ChildSafetyPermissionError.
        """
        case = self._get(case_id)
        self._access(principal, case, Permission.VIEW_QUEUE)
        self._audit_on(principal.staff_id, AuditAction.CASE_VIEW, case_id, now_ms)
        reports = tuple(
            ReportView(
                r,
                tuple(self._reports.items_for_report(r.report_id)),
                tuple(self._reports.matches_for_report(r.report_id)),
            )
            for r in self._reports.reports_for_case(case_id)
        )
        return CaseView(
            case=case,
            lock_remaining_ms=lock_remaining_ms(case, now_ms),
            sla_remaining_ms=sla_remaining_ms(case, now_ms),
            reports=reports,
            notes=tuple(self._cases.notes_for_case(case_id)),
            decisions=tuple(self._cases.decisions_for_case(case_id)),
            enforcements=tuple(
                e
                for e in self._enforcements.enforcements_for_account(case.subject)
                if e.case_id == case_id
            ),
        )

    def queue_for_case(self, principal: Principal, case_id: str) -> Queue:
        """The case's queue after checking the principal may access it (for the evidence
        vault: ``vault.open(..., queue=cases.queue_for_case(p, case_id))``).

        Raises:
            NotFoundError, PermissionDeniedError, ChildSafetyPermissionError.
        """
        case = self._get(case_id)
        queue = self.queue(case.queue_id)
        principal.require_queue(queue)
        return queue

    # --- locks and assignment -----------------------------------------------------------------

    def claim(
        self, principal: Principal, case_id: str, *, now_ms: int, duration_ms: int = DEFAULT_LOCK_MS
    ) -> CaseRecord:
        """Take (or renew) the exclusive lock.

        Raises:
            CaseLockedError: another staff member holds an unexpired lock (the message says for
                how long).
            InvalidCaseStateError: the case is closed.
            SafetyInputError: duration not in 1 ms .. 60 min.
            PermissionDeniedError / ChildSafetyPermissionError.
        """
        if not 0 < duration_ms <= MAX_LOCK_MS:
            raise SafetyInputError("lock duration must be between 1 ms and 60 minutes")
        case = self._get(case_id)
        self._access(principal, case, Permission.CLAIM_CASE)
        if case.state not in LOCKABLE_STATES:
            raise InvalidCaseStateError("the case is closed")
        remaining = lock_remaining_ms(case, now_ms)
        if remaining and case.lock_holder != principal.staff_id:
            raise CaseLockedError(
                f"locked by another staff member for {-(-remaining // 1000)} more seconds"
            )
        case = self._save(
            case, now_ms, lock_holder=principal.staff_id, lock_expires_ms=now_ms + duration_ms
        )
        self._audit_on(
            principal.staff_id,
            AuditAction.CASE_LOCK,
            case_id,
            now_ms,
            {"until_ms": case.lock_expires_ms},
        )
        return case

    def release(self, principal: Principal, case_id: str, *, now_ms: int) -> CaseRecord:
        """Release the lock: its holder, or anyone with BREAK_LOCK (a lead).

        Raises:
            CaseLockedError: someone else holds it and the caller cannot break locks.
        """
        case = self._get(case_id)
        self._access(principal, case, Permission.CLAIM_CASE)
        if case.lock_holder is None:
            return case
        if (
            case.lock_holder != principal.staff_id
            and lock_remaining_ms(case, now_ms)
            and not principal.has(Permission.BREAK_LOCK)
        ):
            raise CaseLockedError("the lock belongs to another staff member")
        previous = case.lock_holder
        case = self._save(case, now_ms, **RELEASE_LOCK)
        self._audit_on(
            principal.staff_id,
            AuditAction.CASE_UNLOCK,
            case_id,
            now_ms,
            {"previous_holder": previous},
        )
        return case

    def assign(
        self, principal: Principal, case_id: str, assignee_id: str, *, now_ms: int
    ) -> CaseRecord:
        """Assign a case to a staff member who can work its queue.

        Raises:
            PermissionDeniedError: actor lacks ASSIGN_CASE or queue access; the assignee
                cannot claim cases or is not a member of the queue.
            ChildSafetyPermissionError: a child-safety case and the assignee is not cleared.
        """
        case = self._get(case_id)
        self._access(principal, case, Permission.ASSIGN_CASE)
        assignee = self._principals(assignee_id)
        assignee.require(Permission.CLAIM_CASE)
        assignee.require_queue(self.queue(case.queue_id))
        case = self._save(case, now_ms, assignee=assignee_id)
        self._audit_on(
            principal.staff_id, AuditAction.CASE_ASSIGN, case_id, now_ms, {"assignee": assignee_id}
        )
        return case

    def add_note(self, principal: Principal, case_id: str, text: str, *, now_ms: int) -> NoteRecord:
        """Add an internal note (the text is not copied into the audit log).

        Raises:
            SafetyInputError: empty or over-long text.  PermissionDeniedError etc.
        """
        case = self._get(case_id)
        self._access(principal, case, Permission.ADD_NOTE)
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS:
            raise SafetyInputError(f"a note must have 1 to {MAX_NOTE_CHARS} characters")
        note = NoteRecord("note_" + self._ids(), case_id, principal.staff_id, now_ms, text)
        self._cases.add_note(note)
        self._audit_on(
            principal.staff_id, AuditAction.CASE_NOTE, case_id, now_ms, {"note": note.note_id}
        )
        return note

    # --- decisions ----------------------------------------------------------------------------

    def _check_decision(
        self, kind: DecisionKind, policy_id: str, reason: str, until_ms: int | None, now_ms: int
    ) -> tuple[DecisionKind, str]:
        try:
            kind = DecisionKind(kind)
        except ValueError:
            raise InvalidDecisionError("unknown decision kind") from None
        if not isinstance(policy_id, str) or policy_id not in self._policies:
            raise InvalidDecisionError("a decision must name a known policy")
        reason = require_text(reason, "reason", MAX_REASON_CHARS)
        if kind is DecisionKind.SUSPEND:
            if until_ms is None or until_ms <= now_ms:
                raise InvalidDecisionError("a suspension needs an end in the future")
        elif kind is DecisionKind.RESTRICT:
            if until_ms is not None and until_ms <= now_ms:
                raise InvalidDecisionError("a restriction's end must be in the future")
        elif until_ms is not None:
            raise InvalidDecisionError(f"a {kind.value} decision has no end time")
        return kind, reason

    def _enforce(self, decision: DecisionRecord, now_ms: int) -> tuple[Enforcement, ...]:
        kind = _ENFORCEMENT_OF.get(decision.kind)
        if kind is None:
            return ()
        enforcement = Enforcement(
            enforcement_id="enf_" + self._ids(),
            account=decision.subject,
            kind=kind,
            until_ms=decision.until_ms,
            decision_id=decision.decision_id,
            case_id=decision.case_id,
            created_ms=now_ms,
        )
        self._enforcements.add_enforcement(enforcement)
        return (enforcement,)

    def decide(
        self,
        principal: Principal,
        case_id: str,
        *,
        kind: DecisionKind,
        policy_id: str,
        reason: str,
        now_ms: int,
        until_ms: int | None = None,
    ) -> DecisionOutcome:
        """Decide a case the caller holds the lock of.

        On an OPEN case: DISMISS / WARN / RESTRICT / SUSPEND are final at once (enforcement
        returned); BAN and ESCALATE_REFERRAL become proposals awaiting `confirm`. On a case
        escalated for a second opinion: only someone with CONFIRM_DECISION other than the
        escalator may decide, and the decision is final.

        Raises:
            InvalidDecisionError: unknown kind or policy, missing reason, bad ``until_ms``.
            CaseLockedError: the caller does not hold the lock.
            InvalidCaseStateError: the case is not open (or has a pending proposal).
            SameReviewerError: deciding a case one escalated oneself.
            PermissionDeniedError / ChildSafetyPermissionError.
        """
        case = self._get(case_id)
        self._access(principal, case, Permission.DECIDE)
        kind, reason = self._check_decision(kind, policy_id, reason, until_ms, now_ms)
        self._require_lock(principal, case, now_ms)
        second_opinion = case.state is CaseState.PENDING_SECOND_REVIEW
        if second_opinion:
            if case.pending_decision_id is not None:
                raise InvalidCaseStateError("a proposed decision awaits confirmation")
            principal.require(Permission.CONFIRM_DECISION)
            if principal.staff_id == case.escalated_by:
                raise SameReviewerError()
        elif case.state is not CaseState.OPEN:
            raise InvalidCaseStateError("the case is not open")
        proposal = kind in SECOND_REVIEW_KINDS and not second_opinion
        decision = DecisionRecord(
            decision_id="dec_" + self._ids(),
            case_id=case_id,
            subject=case.subject,
            kind=kind,
            policy_id=policy_id,
            reason=reason,
            decided_by=principal.staff_id,
            decided_ms=now_ms,
            until_ms=until_ms,
            status=DecisionStatus.PROPOSED if proposal else DecisionStatus.FINAL,
            second_reviewer=principal.staff_id if second_opinion else None,
            second_review_ms=now_ms if second_opinion else None,
        )
        self._cases.add_decision(decision)
        if proposal:
            self._transition(
                case, CaseAction.PROPOSE, now_ms, pending_decision_id=decision.decision_id
            )
            enforcements: tuple[Enforcement, ...] = ()
        else:
            self._transition(
                case, final_action(kind), now_ms, final_decision_id=decision.decision_id
            )
            enforcements = self._enforce(decision, now_ms)
        self._audit_on(
            principal.staff_id,
            AuditAction.DECISION,
            case_id,
            now_ms,
            {
                "decision": decision.decision_id,
                "kind": kind.value,
                "policy": policy_id,
                "status": decision.status.value,
                "until_ms": until_ms,
            },
        )
        return DecisionOutcome(decision, enforcements)

    def escalate(
        self, principal: Principal, case_id: str, *, reason: str, now_ms: int
    ) -> CaseRecord:
        """Ask for a second reviewer without proposing a decision.

        Raises:
            InvalidDecisionError: no reason.  CaseLockedError, InvalidCaseStateError, and
            permission errors.
        """
        case = self._get(case_id)
        self._access(principal, case, Permission.ESCALATE)
        reason = require_text(reason, "reason", MAX_REASON_CHARS)
        self._require_lock(principal, case, now_ms)
        if case.state is not CaseState.OPEN:
            raise InvalidCaseStateError("only an open case can be escalated")
        case = self._transition(case, CaseAction.ESCALATE, now_ms, escalated_by=principal.staff_id)
        note = NoteRecord(
            "note_" + self._ids(),
            case_id,
            principal.staff_id,
            now_ms,
            f"Escalated for a second reviewer: {reason}",
        )
        self._cases.add_note(note)
        self._audit_on(
            principal.staff_id, AuditAction.CASE_ESCALATE, case_id, now_ms, {"note": note.note_id}
        )
        return case

    def _second_review(
        self,
        principal: Principal,
        case_id: str,
        reason: str,
        status: DecisionStatus,
        now_ms: int,
    ) -> tuple[CaseRecord, DecisionRecord]:
        """Record ``principal``'s second review (``status``, ``reason``) of the case's proposed
        decision and return the case and the stored decision; the caller moves the case on.
        Raises as `confirm`."""
        reason = require_text(reason, "reason", MAX_REASON_CHARS)
        case = self._get(case_id)
        self._access(principal, case, Permission.CONFIRM_DECISION)
        if case.state is not CaseState.PENDING_SECOND_REVIEW or case.pending_decision_id is None:
            raise InvalidCaseStateError("no proposed decision awaits confirmation")
        self._require_lock(principal, case, now_ms)
        decision = self._cases.get_decision(case.pending_decision_id)
        if decision is None:
            raise NotFoundError("the proposed decision is missing")
        if decision.decided_by == principal.staff_id:
            raise SameReviewerError()
        decision = replace(
            decision,
            status=status,
            second_reviewer=principal.staff_id,
            second_review_ms=now_ms,
            second_review_reason=reason,
        )
        self._cases.update_decision(decision)
        return case, decision

    def confirm(
        self, principal: Principal, case_id: str, *, reason: str, now_ms: int
    ) -> DecisionOutcome:
        """Second reviewer confirms a proposed BAN / ESCALATE_REFERRAL: it becomes final and
        its enforcement is returned.

        Raises:
            SameReviewerError: the proposer tries to confirm.  InvalidDecisionError: no
            reason.  CaseLockedError, InvalidCaseStateError, permission errors.
        """
        case, decision = self._second_review(
            principal, case_id, reason, DecisionStatus.FINAL, now_ms
        )
        self._transition(
            case,
            final_action(decision.kind),
            now_ms,
            pending_decision_id=None,
            final_decision_id=decision.decision_id,
        )
        enforcements = self._enforce(decision, now_ms)
        self._audit_on(
            principal.staff_id,
            AuditAction.DECISION_CONFIRM,
            case_id,
            now_ms,
            {"decision": decision.decision_id, "kind": decision.kind.value},
        )
        return DecisionOutcome(decision, enforcements)

    def reject(
        self, principal: Principal, case_id: str, *, reason: str, now_ms: int
    ) -> DecisionRecord:
        """Second reviewer rejects a proposal: the case goes back to OPEN.

        Raises: as `confirm`.
        """
        case, decision = self._second_review(
            principal, case_id, reason, DecisionStatus.REJECTED, now_ms
        )
        self._transition(case, CaseAction.REJECT, now_ms, pending_decision_id=None)
        self._audit_on(
            principal.staff_id,
            AuditAction.DECISION_REJECT,
            case_id,
            now_ms,
            {"decision": decision.decision_id},
        )
        return decision

    # --- bad-faith reporters ------------------------------------------------------------------

    def void_reporter(
        self, principal: Principal, reporter: str, *, reason: str, now_ms: int
    ) -> VoidResult:
        """Void every report of ``reporter`` in one action. Open cases left with no accepted
        report are closed as VOIDED; other open cases get their counts and priority
        recomputed. Decided cases keep their decisions (the decision record stands on its
        own reasons; a lead can reopen by other means).

        Raises:
            PermissionDeniedError: no VOID_REPORTER.  InvalidDecisionError: no reason.
        """
        principal.require(Permission.VOID_REPORTER)
        reason = require_text(reason, "reason", MAX_REASON_CHARS)
        voided = 0
        touched: set[str] = set()
        for report in self._reports.reports_by_reporter(reporter):
            if report.status is ReportStatus.VOIDED:
                continue
            self._reports.update_report(
                replace(report, status=ReportStatus.VOIDED, voided_ms=now_ms)
            )
            voided += 1
            if report.case_id is not None:
                touched.add(report.case_id)
        closed: list[str] = []
        updated: list[str] = []
        for case_id in sorted(touched):
            case = self._cases.get_case(case_id)
            if case is None or case.state not in OPEN_STATES:
                continue
            reports, reporters = self._reporters(case_id)
            if reports == 0:
                self._transition(case, CaseAction.VOID, now_ms, report_count=0, reporter_count=0)
                closed.append(case_id)
            else:
                self._save(
                    case,
                    now_ms,
                    report_count=reports,
                    reporter_count=reporters,
                    priority=case.base_priority + duplicate_boost(reports, reporters),
                )
                updated.append(case_id)
        self._audit.append(
            actor=principal.staff_id,
            action=AuditAction.REPORTER_VOIDED,
            target=f"account:{reporter}",
            now_ms=now_ms,
            details={
                "reports": voided,
                "closed": closed,
                "updated": updated,
                "reason": reason[:500],
            },
        )
        return VoidResult(voided, tuple(closed), tuple(updated))

    # --- enforcement --------------------------------------------------------------------------

    def active_enforcements(self, account: str, *, now_ms: int) -> list[Enforcement]:
        """What the messaging server must currently apply to ``account``."""
        return [e for e in self._enforcements.enforcements_for_account(account) if e.active(now_ms)]
