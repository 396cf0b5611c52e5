"""Cases, notes, decisions, appeals (`SqlCaseRepository`: versioned updates; a partial unique
index keeps one open case per subject) and the enforcement rows the messaging server reads
(`SqlEnforcementRepository`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.safety.case_model import (
    OPEN_STATES,
    AppealRecord,
    AppealStatus,
    CaseRecord,
    CaseState,
    DecisionRecord,
    Enforcement,
    NoteRecord,
)
from tidings.safety.sql.engine import SafetyDatabase, insert_row, update_row
from tidings.storage.engine import record_from_row, record_values
from tidings.storage.safety_schema import (
    account_enforcements,
    safety_appeals,
    safety_cases,
    safety_decisions,
    safety_notes,
)

__all__ = ["SqlCaseRepository", "SqlEnforcementRepository"]


def _case(row: Row[Any]) -> CaseRecord:
    return record_from_row(CaseRecord, row)


def _note(row: Row[Any]) -> NoteRecord:
    return record_from_row(NoteRecord, row)


def _decision(row: Row[Any]) -> DecisionRecord:
    return record_from_row(DecisionRecord, row)


def _appeal(row: Row[Any]) -> AppealRecord:
    return record_from_row(AppealRecord, row)


_OPEN = [s.value for s in OPEN_STATES]


class SqlCaseRepository:
    """`tidings.safety.cases.CaseRepository` on ``safety_cases``, ``safety_notes``,
    ``safety_decisions`` and ``safety_appeals``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def add_case(self, case: CaseRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_cases, record_values(case))
        except IntegrityError:
            # The id exists, or (partial unique index) an open case for the subject does.
            raise ConflictError("an open case for this subject exists") from None

    def get_case(self, case_id: str) -> CaseRecord | None:
        return self._db.first(select(safety_cases).where(safety_cases.c.case_id == case_id), _case)

    def update_case(self, case: CaseRecord, expected_version: int) -> None:
        try:
            with self._db.write() as c:
                changed = update_row(
                    c,
                    safety_cases,
                    "case_id",
                    record_values(case),
                    safety_cases.c.version == expected_version,
                )
                if changed != 1:
                    raise ConflictError("case changed concurrently")
        except IntegrityError:
            raise ConflictError("an open case for this subject exists") from None

    def open_case_for_subject(self, subject: str) -> CaseRecord | None:
        c = safety_cases.c
        query = select(safety_cases).where(c.subject == subject, c.state.in_(_OPEN))
        return self._db.first(query, _case)

    def cases_in_queue(self, queue_id: str, states: frozenset[CaseState]) -> list[CaseRecord]:
        c = safety_cases.c
        query = select(safety_cases).where(
            c.queue_id == queue_id, c.state.in_([s.value for s in states])
        )
        return self._db.all(query, _case)

    def cases_for_subject(self, subject: str) -> list[CaseRecord]:
        """Every case about an account, oldest first."""
        c = safety_cases.c
        query = select(safety_cases).where(c.subject == subject).order_by(c.created_ms)
        return self._db.all(query, _case)

    def add_note(self, note: NoteRecord) -> None:
        with self._db.write() as c:
            insert_row(c, safety_notes, record_values(note))

    def notes_for_case(self, case_id: str) -> list[NoteRecord]:
        c = safety_notes.c
        query = select(safety_notes).where(c.case_id == case_id).order_by(c.created_ms, c.note_id)
        return self._db.all(query, _note)

    def add_decision(self, decision: DecisionRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_decisions, record_values(decision))
        except IntegrityError:
            raise ConflictError("decision id exists") from None

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        query = select(safety_decisions).where(safety_decisions.c.decision_id == decision_id)
        return self._db.first(query, _decision)

    def update_decision(self, decision: DecisionRecord) -> None:
        with self._db.write() as c:
            update_row(c, safety_decisions, "decision_id", record_values(decision))

    def decisions_for_case(self, case_id: str) -> list[DecisionRecord]:
        c = safety_decisions.c
        query = (
            select(safety_decisions)
            .where(c.case_id == case_id)
            .order_by(c.decided_ms, c.decision_id)
        )
        return self._db.all(query, _decision)

    def add_appeal(self, appeal: AppealRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_appeals, record_values(appeal))
        except IntegrityError:
            raise ConflictError("this decision was already appealed") from None

    def get_appeal(self, appeal_id: str) -> AppealRecord | None:
        query = select(safety_appeals).where(safety_appeals.c.appeal_id == appeal_id)
        return self._db.first(query, _appeal)

    def update_appeal(self, appeal: AppealRecord) -> None:
        with self._db.write() as c:
            update_row(c, safety_appeals, "appeal_id", record_values(appeal))

    def _appeals(self, condition: ColumnElement[bool]) -> list[AppealRecord]:
        """The appeals meeting ``condition``, oldest first."""
        c = safety_appeals.c
        query = select(safety_appeals).where(condition).order_by(c.filed_ms, c.appeal_id)
        return self._db.all(query, _appeal)

    def appeals_for_decision(self, decision_id: str) -> list[AppealRecord]:
        return self._appeals(safety_appeals.c.decision_id == decision_id)

    def appeals_by_account(self, account: str) -> list[AppealRecord]:
        """Every appeal an account filed, oldest first."""
        return self._appeals(safety_appeals.c.account == account)

    def open_appeals(self) -> list[AppealRecord]:
        """Appeals awaiting a decision, oldest first."""
        return self._appeals(safety_appeals.c.status == AppealStatus.OPEN.value)


# --- enforcement ----------------------------------------------------------------------------


def _enforcement(row: Row[Any]) -> Enforcement:
    # The column is "username", as on the messaging side that reads it.
    return record_from_row(Enforcement, row, account=row.username)


class SqlEnforcementRepository:
    """`tidings.safety.cases.EnforcementRepository` on ``account_enforcements`` — the table the
    messaging server reads (`tidings.storage.enforcement`): a row written here takes effect on
    the messaging API with the next request."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def add_enforcement(self, enforcement: Enforcement) -> None:
        with self._db.write() as c:
            values = record_values(enforcement, renamed={"account": "username"})
            insert_row(c, account_enforcements, values)

    def _select(self, condition: Any) -> list[Enforcement]:
        c = account_enforcements.c
        query = (
            select(account_enforcements).where(condition).order_by(c.created_ms, c.enforcement_id)
        )
        return self._db.all(query, _enforcement)

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.decision_id == decision_id)

    def enforcements_for_account(self, account: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.username == account)

    def active_for_account(self, account: str, now_ms: int) -> list[Enforcement]:
        e = account_enforcements.c
        return self._select(
            and_(
                e.username == account,
                e.revoked_ms.is_(None),
                or_(e.until_ms.is_(None), e.until_ms > now_ms),
            )
        )

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
