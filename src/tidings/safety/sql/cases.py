"""Cases, notes, decisions, appeals (`SqlCaseRepository`: versioned updates; a partial unique
index keeps one open case per subject) and the enforcement rows the messaging server reads
(`SqlEnforcementRepository`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, or_, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.safety.case_model import (
    OPEN_STATES,
    AppealRecord,
    AppealStatus,
    CaseRecord,
    CaseState,
    DecisionKind,
    DecisionRecord,
    DecisionStatus,
    Enforcement,
    EnforcementKind,
    NoteRecord,
    QueueCounts,
)
from tidings.safety.categories import Category, Severity
from tidings.safety.sql.engine import SafetyDatabase, insert_row
from tidings.storage.safety_schema import (
    account_enforcements,
    safety_appeals,
    safety_cases,
    safety_decisions,
    safety_notes,
)

__all__ = ["SqlCaseRepository", "SqlEnforcementRepository"]

_QUEUE_KEYS = (
    (safety_cases.c.priority, True),
    (safety_cases.c.sla_due_ms, False),
    (safety_cases.c.created_ms, False),
    (safety_cases.c.case_id, False),
)
"""`tidings.safety.case_model.queue_order` in SQL, (column, descending) in the column order
of the ``ix_safety_cases_queue_order`` index."""
_QUEUE_ORDER = [col.desc() if desc else col.asc() for col, desc in _QUEUE_KEYS]
_QUEUE_ORDER_REVERSED = [col.asc() if desc else col.desc() for col, desc in _QUEUE_KEYS]


def _in_queue(queue_id: str, states: frozenset[CaseState]) -> ColumnElement[bool]:
    return and_(
        safety_cases.c.queue_id == queue_id,
        safety_cases.c.state.in_([s.value for s in states]),
    )


def _beyond(current: CaseRecord, forward: bool) -> ColumnElement[bool]:
    """Rows after (``forward``) or before ``current`` in queue order, as the expanded
    row-value comparison (priority runs high to low, the other keys low to high).

    The mixed directions rule out a plain row-value comparison, and neither planner turns the
    OR chain into an index range; the redundant bound on the leading key (priority ≤ or ≥
    the current one) does become one, so the scan starts at the current priority band instead
    of at the queue's end."""
    values = (current.priority, current.sla_due_ms, current.created_ms, current.case_id)
    condition: ColumnElement[bool] | None = None
    for (column, descending), value in reversed(list(zip(_QUEUE_KEYS, values, strict=True))):
        past = column > value if forward != descending else column < value
        condition = past if condition is None else or_(past, and_(column == value, condition))
    assert condition is not None
    priority = safety_cases.c.priority
    band = priority <= current.priority if forward else priority >= current.priority
    return and_(band, condition)


def _case_values(case: CaseRecord) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "subject": case.subject,
        "queue_id": case.queue_id,
        "category": case.category.value,
        "severity": int(case.severity),
        "base_priority": case.base_priority,
        "priority": case.priority,
        "state": case.state.value,
        "created_ms": case.created_ms,
        "updated_ms": case.updated_ms,
        "sla_due_ms": case.sla_due_ms,
        "report_count": case.report_count,
        "reporter_count": case.reporter_count,
        "assignee": case.assignee,
        "lock_holder": case.lock_holder,
        "lock_expires_ms": case.lock_expires_ms,
        "escalated_by": case.escalated_by,
        "pending_decision_id": case.pending_decision_id,
        "final_decision_id": case.final_decision_id,
        "version": case.version,
    }


def _case(row: Row[Any]) -> CaseRecord:
    return CaseRecord(
        case_id=row.case_id,
        subject=row.subject,
        queue_id=row.queue_id,
        category=Category(row.category),
        severity=Severity(row.severity),
        base_priority=row.base_priority,
        priority=row.priority,
        state=CaseState(row.state),
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        sla_due_ms=row.sla_due_ms,
        report_count=row.report_count,
        reporter_count=row.reporter_count,
        assignee=row.assignee,
        lock_holder=row.lock_holder,
        lock_expires_ms=row.lock_expires_ms,
        escalated_by=row.escalated_by,
        pending_decision_id=row.pending_decision_id,
        final_decision_id=row.final_decision_id,
        version=row.version,
    )


def _decision_values(d: DecisionRecord) -> dict[str, Any]:
    return {
        "decision_id": d.decision_id,
        "case_id": d.case_id,
        "subject": d.subject,
        "kind": d.kind.value,
        "policy_id": d.policy_id,
        "reason": d.reason,
        "decided_by": d.decided_by,
        "decided_ms": d.decided_ms,
        "until_ms": d.until_ms,
        "status": d.status.value,
        "second_reviewer": d.second_reviewer,
        "second_review_ms": d.second_review_ms,
        "second_review_reason": d.second_review_reason,
    }


def _decision(row: Row[Any]) -> DecisionRecord:
    return DecisionRecord(
        decision_id=row.decision_id,
        case_id=row.case_id,
        subject=row.subject,
        kind=DecisionKind(row.kind),
        policy_id=row.policy_id,
        reason=row.reason,
        decided_by=row.decided_by,
        decided_ms=row.decided_ms,
        until_ms=row.until_ms,
        status=DecisionStatus(row.status),
        second_reviewer=row.second_reviewer,
        second_review_ms=row.second_review_ms,
        second_review_reason=row.second_review_reason,
    )


def _appeal_values(a: AppealRecord) -> dict[str, Any]:
    return {
        "appeal_id": a.appeal_id,
        "decision_id": a.decision_id,
        "case_id": a.case_id,
        "account": a.account,
        "filed_ms": a.filed_ms,
        "statement": a.statement,
        "status": a.status.value,
        "decided_by": a.decided_by,
        "decided_ms": a.decided_ms,
        "reason": a.reason,
    }


def _appeal(row: Row[Any]) -> AppealRecord:
    return AppealRecord(
        appeal_id=row.appeal_id,
        decision_id=row.decision_id,
        case_id=row.case_id,
        account=row.account,
        filed_ms=row.filed_ms,
        statement=row.statement,
        status=AppealStatus(row.status),
        decided_by=row.decided_by,
        decided_ms=row.decided_ms,
        reason=row.reason,
    )


_OPEN = [s.value for s in OPEN_STATES]


class SqlCaseRepository:
    """`tidings.safety.cases.CaseRepository` on ``safety_cases``, ``safety_notes``,
    ``safety_decisions`` and ``safety_appeals``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def add_case(self, case: CaseRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_cases, _case_values(case))
        except IntegrityError:
            # The id exists, or (partial unique index) an open case for the subject does.
            raise ConflictError("an open case for this subject exists") from None

    def get_case(self, case_id: str) -> CaseRecord | None:
        with self._db.read() as c:
            row = c.execute(select(safety_cases).where(safety_cases.c.case_id == case_id)).first()
        return _case(row) if row is not None else None

    def update_case(self, case: CaseRecord, expected_version: int) -> None:
        values = _case_values(case)
        del values["case_id"]
        try:
            with self._db.write() as c:
                result = c.execute(
                    update(safety_cases)
                    .where(
                        safety_cases.c.case_id == case.case_id,
                        safety_cases.c.version == expected_version,
                    )
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise ConflictError("case changed concurrently")
        except IntegrityError:
            raise ConflictError("an open case for this subject exists") from None

    def open_case_for_subject(self, subject: str) -> CaseRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_cases).where(
                    safety_cases.c.subject == subject, safety_cases.c.state.in_(_OPEN)
                )
            ).first()
        return _case(row) if row is not None else None

    def cases_in_queue(self, queue_id: str, states: frozenset[CaseState]) -> list[CaseRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_cases).where(
                    safety_cases.c.queue_id == queue_id,
                    safety_cases.c.state.in_([s.value for s in states]),
                )
            ).all()
        return [_case(r) for r in rows]

    def queue_page(
        self, queue_id: str, states: frozenset[CaseState], *, limit: int, offset: int = 0
    ) -> list[CaseRecord]:
        query = (
            select(safety_cases)
            .where(_in_queue(queue_id, states))
            .order_by(*_QUEUE_ORDER)
            .limit(limit)
            .offset(offset)
        )
        with self._db.read() as c:
            rows = c.execute(query).all()
        return [_case(r) for r in rows]

    def queue_neighbour(
        self,
        queue_id: str,
        states: frozenset[CaseState],
        current: CaseRecord | None,
        *,
        forward: bool,
    ) -> CaseRecord | None:
        query = select(safety_cases).where(_in_queue(queue_id, states))
        if current is not None:
            query = query.where(_beyond(current, forward))
        order = _QUEUE_ORDER if forward else _QUEUE_ORDER_REVERSED
        with self._db.read() as c:
            row = c.execute(query.order_by(*order).limit(1)).first()
        return _case(row) if row is not None else None

    def queue_counts(
        self, queue_ids: Sequence[str], states: frozenset[CaseState], now_ms: int
    ) -> dict[str, QueueCounts]:
        t = safety_cases.c
        overdue = func.sum(sql_case((t.sla_due_ms < now_ms, 1), else_=0))
        locked = func.sum(
            sql_case((and_(t.lock_holder.is_not(None), t.lock_expires_ms > now_ms), 1), else_=0)
        )
        query = (
            select(t.queue_id, func.count(), overdue, locked, func.min(t.sla_due_ms))
            .where(t.queue_id.in_(list(queue_ids)), t.state.in_([s.value for s in states]))
            .group_by(t.queue_id)
        )
        with self._db.read() as c:
            rows = c.execute(query).all()
        return {
            q: QueueCounts(total=n, overdue=int(late), locked=int(held), next_due_ms=due)
            for q, n, late, held, due in rows
        }

    def add_note(self, note: NoteRecord) -> None:
        with self._db.write() as c:
            insert_row(
                c,
                safety_notes,
                {
                    "note_id": note.note_id,
                    "case_id": note.case_id,
                    "author": note.author,
                    "created_ms": note.created_ms,
                    "text": note.text,
                },
            )

    def notes_for_case(self, case_id: str) -> list[NoteRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_notes)
                .where(safety_notes.c.case_id == case_id)
                .order_by(safety_notes.c.created_ms, safety_notes.c.note_id)
            ).all()
        return [NoteRecord(r.note_id, r.case_id, r.author, r.created_ms, r.text) for r in rows]

    def add_decision(self, decision: DecisionRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_decisions, _decision_values(decision))
        except IntegrityError:
            raise ConflictError("decision id exists") from None

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_decisions).where(safety_decisions.c.decision_id == decision_id)
            ).first()
        return _decision(row) if row is not None else None

    def update_decision(self, decision: DecisionRecord) -> None:
        values = _decision_values(decision)
        del values["decision_id"]
        with self._db.write() as c:
            c.execute(
                update(safety_decisions)
                .where(safety_decisions.c.decision_id == decision.decision_id)
                .values(**values)
            )

    def decisions_for_case(self, case_id: str) -> list[DecisionRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_decisions)
                .where(safety_decisions.c.case_id == case_id)
                .order_by(safety_decisions.c.decided_ms, safety_decisions.c.decision_id)
            ).all()
        return [_decision(r) for r in rows]

    def add_appeal(self, appeal: AppealRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_appeals, _appeal_values(appeal))
        except IntegrityError:
            raise ConflictError("this decision was already appealed") from None

    def get_appeal(self, appeal_id: str) -> AppealRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_appeals).where(safety_appeals.c.appeal_id == appeal_id)
            ).first()
        return _appeal(row) if row is not None else None

    def update_appeal(self, appeal: AppealRecord) -> None:
        values = _appeal_values(appeal)
        del values["appeal_id"]
        with self._db.write() as c:
            c.execute(
                update(safety_appeals)
                .where(safety_appeals.c.appeal_id == appeal.appeal_id)
                .values(**values)
            )

    def appeals_for_decision(self, decision_id: str) -> list[AppealRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_appeals).where(safety_appeals.c.decision_id == decision_id)
            ).all()
        return [_appeal(r) for r in rows]

    def appeals_by_account(self, account: str) -> list[AppealRecord]:
        """Every appeal an account filed, oldest first."""
        with self._db.read() as c:
            rows = c.execute(
                select(safety_appeals)
                .where(safety_appeals.c.account == account)
                .order_by(safety_appeals.c.filed_ms)
            ).all()
        return [_appeal(r) for r in rows]


# --- enforcement ----------------------------------------------------------------------------


def _enforcement(row: Row[Any]) -> Enforcement:
    return Enforcement(
        enforcement_id=row.enforcement_id,
        account=row.username,
        kind=EnforcementKind(row.kind),
        until_ms=row.until_ms,
        decision_id=row.decision_id,
        case_id=row.case_id,
        created_ms=row.created_ms,
        revoked_ms=row.revoked_ms,
    )


class SqlEnforcementRepository:
    """`tidings.safety.cases.EnforcementRepository` on ``account_enforcements`` — the table the
    messaging server reads (`tidings.storage.enforcement`): a row written here takes effect on
    the messaging API with the next request."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def add_enforcement(self, enforcement: Enforcement) -> None:
        with self._db.write() as c:
            insert_row(
                c,
                account_enforcements,
                {
                    "enforcement_id": enforcement.enforcement_id,
                    "username": enforcement.account,
                    "kind": enforcement.kind.value,
                    "until_ms": enforcement.until_ms,
                    "decision_id": enforcement.decision_id,
                    "case_id": enforcement.case_id,
                    "created_ms": enforcement.created_ms,
                    "revoked_ms": enforcement.revoked_ms,
                },
            )

    def _select(self, condition: Any) -> list[Enforcement]:
        with self._db.read() as c:
            rows = c.execute(
                select(account_enforcements)
                .where(condition)
                .order_by(account_enforcements.c.created_ms, account_enforcements.c.enforcement_id)
            ).all()
        return [_enforcement(r) for r in rows]

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.decision_id == decision_id)

    def enforcements_for_account(self, account: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.username == account)

    def revoke_enforcement(self, enforcement_id: str, revoked_ms: int) -> None:
        with self._db.write() as c:
            c.execute(
                update(account_enforcements)
                .where(
                    account_enforcements.c.enforcement_id == enforcement_id,
                    account_enforcements.c.revoked_ms.is_(None),
                )
                .values(revoked_ms=revoked_ms)
            )
