"""Case model: states, decision kinds, records, repository protocols, views and outcomes.

The pure data side of `tidings.safety.cases`: what a case, note, decision, appeal and
enforcement *are*, the repository contracts they are stored through
(`tidings.safety.case_memory` in memory, `tidings.safety.sql` on a database) and the read
models the service returns. No behaviour beyond small pure functions of a record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from tidings.clock import DAY_MS
from tidings.safety.categories import Category, Severity
from tidings.safety.reports import ReportedItemRecord, ReportMatch, ReportRecord

MINUTE_MS = 60_000
DEFAULT_LOCK_MS = 15 * MINUTE_MS
MAX_LOCK_MS = 60 * MINUTE_MS
APPEAL_WINDOW_MS = 180 * DAY_MS
MAX_REASON_CHARS = 5000
MAX_NOTE_CHARS = 10_000
MAX_DUPLICATE_BOOST = 250


class CaseState(StrEnum):
    OPEN = "open"
    PENDING_SECOND_REVIEW = "pending_second_review"
    DISMISSED = "dismissed"
    ACTIONED = "actioned"
    REFERRED = "referred"  # confirmed ESCALATE_REFERRAL: legal prepares the referral
    APPEALED = "appealed"
    OVERTURNED = "overturned"
    VOIDED = "voided"  # every report was voided (bad-faith reporter)


OPEN_STATES = frozenset({CaseState.OPEN, CaseState.PENDING_SECOND_REVIEW})
LOCKABLE_STATES = OPEN_STATES | {CaseState.APPEALED}


class CaseSource(StrEnum):
    """What opened a case. Values are stable (stored)."""

    REPORT = "report"  # user reports (franked, verified)
    DETECTION = "detection"  # a match against a hash bank


class DecisionKind(StrEnum):
    DISMISS = "dismiss"
    WARN = "warn"
    RESTRICT = "restrict"
    SUSPEND = "suspend"
    BAN = "ban"
    ESCALATE_REFERRAL = "escalate_referral"


SECOND_REVIEW_KINDS = frozenset({DecisionKind.BAN, DecisionKind.ESCALATE_REFERRAL})
"""Decisions that take a second, different reviewer before they take effect."""


class DecisionStatus(StrEnum):
    PROPOSED = "proposed"
    FINAL = "final"
    REJECTED = "rejected"


class EnforcementKind(StrEnum):
    WARN = "warn"
    RESTRICT = "restrict"
    SUSPEND = "suspend"
    BAN = "ban"


_ENFORCEMENT_OF: Mapping[DecisionKind, EnforcementKind] = {
    DecisionKind.WARN: EnforcementKind.WARN,
    DecisionKind.RESTRICT: EnforcementKind.RESTRICT,
    DecisionKind.SUSPEND: EnforcementKind.SUSPEND,
    DecisionKind.BAN: EnforcementKind.BAN,
    # Confirmed child exploitation is referred *and* the account is banned.
    DecisionKind.ESCALATE_REFERRAL: EnforcementKind.BAN,
}


class AppealStatus(StrEnum):
    OPEN = "open"
    UPHELD = "upheld"
    OVERTURNED = "overturned"


@dataclass(frozen=True, slots=True)
class Policy:
    """A published policy a decision cites."""

    policy_id: str
    title: str


DEFAULT_POLICIES: Mapping[str, Policy] = {
    p.policy_id: p
    for p in (
        Policy("CSE-1", "Child sexual exploitation and abuse"),
        Policy("VIO-1", "Threats of violence"),
        Policy("TER-1", "Terrorism and violent extremism"),
        Policy("HAR-1", "Harassment and bullying"),
        Policy("SH-1", "Suicide and self-harm"),
        Policy("SPM-1", "Spam and platform manipulation"),
        Policy("FRD-1", "Fraud and scams"),
        Policy("GEN-1", "Other terms of service"),
        Policy("NV-0", "No violation found"),
    )
}


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """A case (a row). ``version`` is for optimistic concurrency."""

    case_id: str
    subject: str
    queue_id: str
    category: Category
    severity: Severity
    base_priority: int
    priority: int
    state: CaseState
    created_ms: int
    updated_ms: int
    sla_due_ms: int
    report_count: int
    reporter_count: int
    assignee: str | None = None
    lock_holder: str | None = None
    lock_expires_ms: int = 0
    escalated_by: str | None = None
    pending_decision_id: str | None = None
    final_decision_id: str | None = None
    version: int = 0
    source: CaseSource = CaseSource.REPORT


@dataclass(frozen=True, slots=True)
class NoteRecord:
    note_id: str
    case_id: str
    author: str
    created_ms: int
    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    decision_id: str
    case_id: str
    subject: str
    kind: DecisionKind
    policy_id: str
    reason: str = field(repr=False)
    decided_by: str = ""
    decided_ms: int = 0
    until_ms: int | None = None
    status: DecisionStatus = DecisionStatus.FINAL
    second_reviewer: str | None = None
    second_review_ms: int | None = None
    second_review_reason: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class AppealRecord:
    appeal_id: str
    decision_id: str
    case_id: str
    account: str
    filed_ms: int
    statement: str = field(repr=False)
    status: AppealStatus = AppealStatus.OPEN
    decided_by: str | None = None
    decided_ms: int | None = None
    reason: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What the messaging server applies to an account. ``until_ms`` None: no end (a ban or a
    warning); ``revoked_ms`` set when an appeal overturned it."""

    enforcement_id: str
    account: str
    kind: EnforcementKind
    until_ms: int | None
    decision_id: str
    case_id: str
    created_ms: int
    revoked_ms: int | None = None

    def active(self, now_ms: int) -> bool:
        return self.revoked_ms is None and (self.until_ms is None or now_ms < self.until_ms)


class CaseRepository(Protocol):
    """Storage of cases, notes, decisions and appeals (SQL: one table each; a partial unique
    index on ``case(subject) WHERE state IN ('open', 'pending_second_review')`` keeps one
    open case per subject)."""

    def add_case(self, case: CaseRecord) -> None: ...

    def get_case(self, case_id: str) -> CaseRecord | None: ...

    def update_case(self, case: CaseRecord, expected_version: int) -> None:
        """Store if the stored version is ``expected_version``; else `ConflictError`."""
        ...

    def open_case_for_subject(self, subject: str) -> CaseRecord | None: ...

    def cases_for_subject(self, subject: str) -> list[CaseRecord]:
        """Every case about ``subject``, oldest first (a lawful production)."""
        ...

    def list_cases(self, *, limit: int, offset: int = 0) -> list[CaseRecord]:
        """At most ``limit`` cases of every queue and state, oldest first (by created time,
        then id), skipping the first ``offset``: `tidings admin cases`."""
        ...

    def cases_in_queue(self, queue_id: str, states: frozenset[CaseState]) -> list[CaseRecord]: ...

    def queue_page(
        self, queue_id: str, states: frozenset[CaseState], *, limit: int, offset: int = 0
    ) -> list[CaseRecord]:
        """At most ``limit`` cases of the queue in ``states``, in `queue_order`, skipping the
        first ``offset`` (SQL: ORDER BY + LIMIT/OFFSET on ``ix_safety_cases_queue_order``)."""
        ...

    def queue_neighbour(
        self,
        queue_id: str,
        states: frozenset[CaseState],
        current: CaseRecord | None,
        *,
        forward: bool,
    ) -> CaseRecord | None:
        """The case right after (``forward``) or before ``current`` in `queue_order` (keyset:
        one indexed row); from None, the first (last) case. None past either end."""
        ...

    def queue_counts(
        self, queue_ids: Sequence[str], states: frozenset[CaseState], now_ms: int
    ) -> dict[str, QueueCounts]:
        """`QueueCounts` of each of ``queue_ids`` that has a case in ``states`` (SQL: one
        GROUP BY); a queue without one is absent."""
        ...

    def add_note(self, note: NoteRecord) -> None: ...

    def notes_for_case(self, case_id: str) -> list[NoteRecord]: ...

    def add_decision(self, decision: DecisionRecord) -> None: ...

    def get_decision(self, decision_id: str) -> DecisionRecord | None: ...

    def update_decision(self, decision: DecisionRecord) -> None: ...

    def decisions_for_case(self, case_id: str) -> list[DecisionRecord]: ...

    def add_appeal(self, appeal: AppealRecord) -> None: ...

    def get_appeal(self, appeal_id: str) -> AppealRecord | None: ...

    def update_appeal(self, appeal: AppealRecord) -> None: ...

    def appeals_for_decision(self, decision_id: str) -> list[AppealRecord]: ...


class EnforcementRepository(Protocol):
    """Storage of enforcement records (SQL: one table, index on ``account``)."""

    def add_enforcement(self, enforcement: Enforcement) -> None: ...

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]: ...

    def enforcements_for_account(self, account: str) -> list[Enforcement]: ...

    def revoke_enforcement(self, enforcement_id: str, revoked_ms: int) -> None: ...


# --- views and outcomes ---------------------------------------------------------------------


def lock_remaining_ms(case: CaseRecord, now_ms: int) -> int:
    """Milliseconds left on the case lock (0 if unlocked or expired) — the visible countdown."""
    if case.lock_holder is None:
        return 0
    return max(0, case.lock_expires_ms - now_ms)


def sla_remaining_ms(case: CaseRecord, now_ms: int) -> int:
    """Milliseconds until the SLA deadline; negative once breached."""
    return case.sla_due_ms - now_ms


def duplicate_boost(report_count: int, reporter_count: int) -> int:
    """Priority added by duplicate reports: +25 per additional distinct reporter, +5 per
    further report from a reporter already counted, capped at `MAX_DUPLICATE_BOOST`. Distinct
    reporters weigh more so one person cannot flood a case to the top."""
    extra_reporters = max(0, reporter_count - 1)
    repeats = max(0, report_count - reporter_count)
    return min(25 * extra_reporters + 5 * repeats, MAX_DUPLICATE_BOOST)


def queue_order(case: CaseRecord) -> tuple[int, int, int, str]:
    """The sort key of a queue, most urgent first: priority (high first), SLA deadline,
    creation time, then the case id so the order is total (keyset paging needs that)."""
    return (-case.priority, case.sla_due_ms, case.created_ms, case.case_id)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """One queue's figures at ``now_ms``: cases listed, of them past the SLA deadline, of them
    under a live lock, and the earliest SLA deadline (None for an empty queue)."""

    total: int = 0
    overdue: int = 0
    locked: int = 0
    next_due_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CaseSummary:
    case: CaseRecord
    lock_remaining_ms: int
    sla_remaining_ms: int


@dataclass(frozen=True, slots=True)
class ReportView:
    report: ReportRecord
    items: tuple[ReportedItemRecord, ...]
    matches: tuple[ReportMatch, ...] = ()
    """The report's attachments that matched hash-bank entries."""

    @property
    def all_items_verified(self) -> bool:
        return all(i.franking_verified and i.chain_verified for i in self.items)


@dataclass(frozen=True, slots=True)
class CaseView:
    case: CaseRecord
    lock_remaining_ms: int
    sla_remaining_ms: int
    reports: tuple[ReportView, ...]
    notes: tuple[NoteRecord, ...]
    decisions: tuple[DecisionRecord, ...]
    enforcements: tuple[Enforcement, ...]


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """The decision and what the server must apply (``enforcements``) or lift (``revoked``)."""

    decision: DecisionRecord
    enforcements: tuple[Enforcement, ...] = ()
    revoked: tuple[Enforcement, ...] = ()


@dataclass(frozen=True, slots=True)
class VoidResult:
    reports_voided: int
    cases_closed: tuple[str, ...]
    cases_updated: tuple[str, ...]
