"""In-memory `CaseRepository` and `EnforcementRepository` (tests, the demo), beside the SQL
ones in `tidings.safety.sql`; the same contracts, including optimistic concurrency."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

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
    lock_remaining_ms,
    queue_order,
    sla_remaining_ms,
)
from tidings.safety.memory_rows import GroupCounts, count_groups, in_period, replace_versioned


class InMemoryCaseRepository:
    """`CaseRepository` in memory."""

    def __init__(self) -> None:
        self.cases: dict[str, CaseRecord] = {}
        self.notes: list[NoteRecord] = []
        self.decisions: dict[str, DecisionRecord] = {}
        self.appeals: dict[str, AppealRecord] = {}
        self._lock = threading.Lock()

    def add_case(self, case: CaseRecord) -> None:
        with self._lock:
            if case.case_id in self.cases:
                raise ConflictError("case id exists")
            if case.state in OPEN_STATES and self.open_case_for_subject(case.subject):
                raise ConflictError("an open case for this subject exists")
            self.cases[case.case_id] = case

    def get_case(self, case_id: str) -> CaseRecord | None:
        return self.cases.get(case_id)

    def update_case(self, case: CaseRecord, expected_version: int) -> None:
        with self._lock:
            replace_versioned(
                self.cases, case.case_id, case, expected_version,
                conflict="case changed concurrently",
            )

    def open_case_for_subject(self, subject: str) -> CaseRecord | None:
        return next(
            (c for c in self.cases.values() if c.subject == subject and c.state in OPEN_STATES),
            None,
        )

    def cases_for_subject(self, subject: str) -> list[CaseRecord]:
        return sorted((c for c in self.cases.values() if c.subject == subject),
                      key=lambda c: (c.created_ms, c.case_id))

    def list_cases(self, *, limit: int, offset: int = 0) -> list[CaseRecord]:
        ordered = sorted(self.cases.values(), key=lambda c: (c.created_ms, c.case_id))
        return ordered[offset : offset + limit]

    def cases_in_queue(self, queue_id: str, states: frozenset[CaseState]) -> list[CaseRecord]:
        return [c for c in self.cases.values() if c.queue_id == queue_id and c.state in states]

    def queue_page(
        self, queue_id: str, states: frozenset[CaseState], *, limit: int, offset: int = 0
    ) -> list[CaseRecord]:
        ordered = sorted(self.cases_in_queue(queue_id, states), key=queue_order)
        return ordered[offset : offset + limit]

    def queue_neighbour(
        self,
        queue_id: str,
        states: frozenset[CaseState],
        current: CaseRecord | None,
        *,
        forward: bool,
    ) -> CaseRecord | None:
        ordered = sorted(self.cases_in_queue(queue_id, states), key=queue_order)
        if current is not None:
            key = queue_order(current)
            ordered = [
                c for c in ordered if queue_order(c) != key and (queue_order(c) > key) == forward
            ]
        if not ordered:
            return None
        return ordered[0] if forward else ordered[-1]

    def queue_counts(
        self, queue_ids: Sequence[str], states: frozenset[CaseState], now_ms: int
    ) -> dict[str, QueueCounts]:
        out: dict[str, QueueCounts] = {}
        for queue_id in queue_ids:
            cases = self.cases_in_queue(queue_id, states)
            if cases:
                out[queue_id] = QueueCounts(
                    total=len(cases),
                    overdue=sum(1 for c in cases if sla_remaining_ms(c, now_ms) < 0),
                    locked=sum(1 for c in cases if lock_remaining_ms(c, now_ms) > 0),
                    next_due_ms=min(c.sla_due_ms for c in cases),
                )
        return out

    def add_note(self, note: NoteRecord) -> None:
        self.notes.append(note)

    def notes_for_case(self, case_id: str) -> list[NoteRecord]:
        return [n for n in self.notes if n.case_id == case_id]

    def add_decision(self, decision: DecisionRecord) -> None:
        self.decisions[decision.decision_id] = decision

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        return self.decisions.get(decision_id)

    def update_decision(self, decision: DecisionRecord) -> None:
        self.decisions[decision.decision_id] = decision

    def decisions_for_case(self, case_id: str) -> list[DecisionRecord]:
        return [d for d in self.decisions.values() if d.case_id == case_id]

    def add_appeal(self, appeal: AppealRecord) -> None:
        self.appeals[appeal.appeal_id] = appeal

    def get_appeal(self, appeal_id: str) -> AppealRecord | None:
        return self.appeals.get(appeal_id)

    def update_appeal(self, appeal: AppealRecord) -> None:
        self.appeals[appeal.appeal_id] = appeal

    def appeals_for_decision(self, decision_id: str) -> list[AppealRecord]:
        return [a for a in self.appeals.values() if a.decision_id == decision_id]

    # --- aggregates: the SQL repository's, counted over the rows ----------------------------

    def count_cases(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self.cases.values()),
            lambda c: (c.source.value, c.category.value)
            if in_period(c.created_ms, start_ms, end_ms)
            else None,
        )

    def count_decisions(self, start_ms: int, end_ms: int) -> GroupCounts:
        def key(d: DecisionRecord) -> tuple[str, ...] | None:
            settled = d.second_review_ms if d.second_review_ms is not None else d.decided_ms
            case = self.cases.get(d.case_id)
            if case is None or not in_period(settled, start_ms, end_ms):
                return None
            return (case.source.value, d.kind.value, d.status.value)

        return count_groups(list(self.decisions.values()), key)

    def count_appeals_filed(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self.appeals.values()),
            lambda a: (a.status.value,) if in_period(a.filed_ms, start_ms, end_ms) else None,
        )

    def count_appeals_decided(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self.appeals.values()),
            lambda a: (a.status.value,) if in_period(a.decided_ms, start_ms, end_ms) else None,
        )


class InMemoryEnforcementRepository:
    """`EnforcementRepository` in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, Enforcement] = {}

    def add_enforcement(self, enforcement: Enforcement) -> None:
        self.rows[enforcement.enforcement_id] = enforcement

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]:
        return [e for e in self.rows.values() if e.decision_id == decision_id]

    def enforcements_for_account(self, account: str) -> list[Enforcement]:
        return [e for e in self.rows.values() if e.account == account]

    def count_enforcements(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self.rows.values()),
            lambda e: (e.kind.value,) if in_period(e.created_ms, start_ms, end_ms) else None,
        )

    def count_revocations(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self.rows.values()),
            lambda e: (e.kind.value,) if in_period(e.revoked_ms, start_ms, end_ms) else None,
        )

    def revoke_enforcement(self, enforcement_id: str, revoked_ms: int) -> None:
        current = self.rows.get(enforcement_id)
        if current is not None and current.revoked_ms is None:
            self.rows[enforcement_id] = replace(current, revoked_ms=revoked_ms)
