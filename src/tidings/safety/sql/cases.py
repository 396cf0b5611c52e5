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
    CaseRecord,
    CaseState,
    DecisionRecord,
    Enforcement,
    NoteRecord,
    QueueCounts,
)
from tidings.safety.memory_rows import GroupCounts
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, during
from tidings.storage.engine import record_from_row, record_values
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


_OPEN = [s.value for s in OPEN_STATES]
_OPEN_CASE_EXISTS = "an open case for this subject exists"


class SqlCaseRepository:
    """`tidings.safety.cases.CaseRepository` on ``safety_cases``, ``safety_notes``,
    ``safety_decisions`` and ``safety_appeals``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._cases = RecordTable(db, safety_cases, "case_id", CaseRecord)
        self._notes = RecordTable(db, safety_notes, "note_id", NoteRecord)
        self._decisions = RecordTable(db, safety_decisions, "decision_id", DecisionRecord)
        self._appeals = RecordTable(db, safety_appeals, "appeal_id", AppealRecord)

    def add_case(self, case: CaseRecord) -> None:
        # The id exists, or (partial unique index) an open case for the subject does.
        self._cases.insert(case, conflict=_OPEN_CASE_EXISTS)

    def get_case(self, case_id: str) -> CaseRecord | None:
        return self._cases.get(case_id)

    def update_case(self, case: CaseRecord, expected_version: int) -> None:
        try:
            self._cases.update(
                case,
                safety_cases.c.version == expected_version,
                conflict="case changed concurrently",
            )
        except IntegrityError:
            raise ConflictError(_OPEN_CASE_EXISTS) from None

    def open_case_for_subject(self, subject: str) -> CaseRecord | None:
        c = safety_cases.c
        found = self._cases.where(and_(c.subject == subject, c.state.in_(_OPEN)), limit=1)
        return found[0] if found else None

    def cases_for_subject(self, subject: str) -> list[CaseRecord]:
        c = safety_cases.c
        return self._cases.where(c.subject == subject, c.created_ms, c.case_id)

    def list_cases(self, *, limit: int, offset: int = 0) -> list[CaseRecord]:
        c = safety_cases.c
        query = select(safety_cases).order_by(c.created_ms, c.case_id).limit(limit).offset(offset)
        return self._cases.db.all(query, self._cases.decode)

    def cases_in_queue(self, queue_id: str, states: frozenset[CaseState]) -> list[CaseRecord]:
        c = safety_cases.c
        return self._cases.where(
            and_(c.queue_id == queue_id, c.state.in_([s.value for s in states]))
        )

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
        return self._cases.db.all(query, self._cases.decode)

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
        found = self._cases.db.all(query.order_by(*order).limit(1), self._cases.decode)
        return found[0] if found else None

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
        return {
            q: QueueCounts(total=n, overdue=int(late), locked=int(held), next_due_ms=due)
            for q, n, late, held, due in self._cases.db.all(query, tuple)
        }

    def add_note(self, note: NoteRecord) -> None:
        self._notes.insert(note)

    def notes_for_case(self, case_id: str) -> list[NoteRecord]:
        c = safety_notes.c
        return self._notes.where(c.case_id == case_id, c.created_ms, c.note_id)

    def add_decision(self, decision: DecisionRecord) -> None:
        self._decisions.insert(decision, conflict="decision id exists")

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        return self._decisions.get(decision_id)

    def update_decision(self, decision: DecisionRecord) -> None:
        self._decisions.update(decision)

    def decisions_for_case(self, case_id: str) -> list[DecisionRecord]:
        c = safety_decisions.c
        return self._decisions.where(c.case_id == case_id, c.decided_ms, c.decision_id)

    def add_appeal(self, appeal: AppealRecord) -> None:
        self._appeals.insert(appeal, conflict="this decision was already appealed")

    def get_appeal(self, appeal_id: str) -> AppealRecord | None:
        return self._appeals.get(appeal_id)

    def update_appeal(self, appeal: AppealRecord) -> None:
        self._appeals.update(appeal)

    def _appeals_where(self, condition: ColumnElement[bool]) -> list[AppealRecord]:
        """The appeals meeting ``condition``, oldest first."""
        c = safety_appeals.c
        return self._appeals.where(condition, c.filed_ms, c.appeal_id)

    def appeals_for_decision(self, decision_id: str) -> list[AppealRecord]:
        return self._appeals_where(safety_appeals.c.decision_id == decision_id)

    def appeals_by_account(self, account: str) -> list[AppealRecord]:
        """Every appeal an account filed, oldest first."""
        return self._appeals_where(safety_appeals.c.account == account)

    # --- aggregates (`tidings.safety.transparency`): one GROUP BY each, uncapped -------------

    def count_cases(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Cases opened in ``[start_ms, end_ms)``, keyed ``(source, category)``."""
        c = safety_cases.c
        return self._cases.count_by(during(c.created_ms, start_ms, end_ms), c.source, c.category)

    def count_decisions(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Decisions settled in ``[start_ms, end_ms)`` — at the second review when there was
        one, else when made — keyed ``(case source, kind, status)``."""
        d, c = safety_decisions.c, safety_cases.c
        settled = func.coalesce(d.second_review_ms, d.decided_ms)
        query = (
            select(c.source, d.kind, d.status, func.count())
            .select_from(safety_decisions.join(safety_cases, c.case_id == d.case_id))
            .where(during(settled, start_ms, end_ms))
            .group_by(c.source, d.kind, d.status)
        )
        return {
            (str(source), str(kind), str(status)): int(n)
            for source, kind, status, n in self._cases.db.all(query, tuple)
        }

    def count_appeals_filed(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Appeals filed in ``[start_ms, end_ms)``, keyed ``(status,)`` (as they stand now)."""
        a = safety_appeals.c
        return self._appeals.count_by(during(a.filed_ms, start_ms, end_ms), a.status)

    def count_appeals_decided(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Appeals decided in ``[start_ms, end_ms)``, keyed ``(status,)`` (upheld, overturned)."""
        a = safety_appeals.c
        return self._appeals.count_by(during(a.decided_ms, start_ms, end_ms), a.status)


# --- enforcement ----------------------------------------------------------------------------


def _enforcement(row: Row[Any]) -> Enforcement:
    # The column is "username", as on the messaging side that reads it.
    return record_from_row(Enforcement, row, account=row.username)


def _enforcement_values(enforcement: Enforcement) -> dict[str, Any]:
    return record_values(enforcement, renamed={"account": "username"})


class SqlEnforcementRepository:
    """`tidings.safety.cases.EnforcementRepository` on ``account_enforcements`` — the table the
    messaging server reads (`tidings.storage.enforcement`): a row written here takes effect on
    the messaging API with the next request."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db
        self._rows = RecordTable(
            db,
            account_enforcements,
            "enforcement_id",
            Enforcement,
            decode=_enforcement,
            encode=_enforcement_values,
        )

    def add_enforcement(self, enforcement: Enforcement) -> None:
        self._rows.insert(enforcement)

    def _select(self, condition: ColumnElement[bool]) -> list[Enforcement]:
        c = account_enforcements.c
        return self._rows.where(condition, c.created_ms, c.enforcement_id)

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.decision_id == decision_id)

    def enforcements_for_account(self, account: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.username == account)

    def count_enforcements(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Enforcements applied in ``[start_ms, end_ms)``, keyed ``(kind,)``: one GROUP BY."""
        e = account_enforcements.c
        return self._rows.count_by(during(e.created_ms, start_ms, end_ms), e.kind)

    def count_revocations(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Enforcements revoked (an appeal overturned them) in ``[start_ms, end_ms)``, keyed
        ``(kind,)``: one GROUP BY."""
        e = account_enforcements.c
        return self._rows.count_by(during(e.revoked_ms, start_ms, end_ms), e.kind)

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
