"""`SafetyService`: the one object the console, the user-facing safety routes and the CLI use.

It wires the domain services (`StaffService`, `CaseService`, `EvidenceVault`, `AuditLog`,
`ReportIntake`) over one set of repositories (SQL on a synchronous engine, or in memory), with
the clock, the keys and the enforcement callback, and adds the few operations that span
several services (account status, appeals filed by users, first-admin bootstrap). Every method
is synchronous: async callers run them in a thread pool. The console drives the domain services
through these attributes (`tidings.console.context.ConsoleContext`), not through wrappers here.

API summary (stable)
--------------------
Construction:
  SafetyService.open(database_url, *, schema="", franking_keys, evidence_keys, fetcher,
                     anchor_key=None, clock=now_ms, on_enforcement=None, hasher=None,
                     router=None, policies=DEFAULT_POLICIES) -> SafetyService   (SQL)
  SafetyService(repos: SafetyRepositories, *, ...same keywords...)
  .migrate()  .close()
Attributes (`tidings.console.context.ConsoleContext.from_service` reads these):
  .staff  .cases  .vault  .audit  .intake  .banks (domain services)
  .bank_matcher (the clear-text hash-bank index: reports, detection confirmation)
  .staff_repo  .case_repo  .enforcement_repo  .report_repo  .evidence_repo  .audit_repo
  .detection_repo   .detection (the DetectionService, once the composition root set it)
  .referrals (the ReferralService: prepare/approve/submit/retract/reopen)  .referral_repo
  .lawful (the LawfulRequestService: receive/verify/review/scope/produce/deliver/close)
  .queues: Mapping[str, Queue]   .policies: Mapping[str, Policy]   .clock() -> ms
  .list_staff() -> list[StaffAccount]
Users (behind POST /v1/reports, GET /v1/account/status, POST /v1/appeals):
  submit_report(submission) -> ReportReceipt
  account_status(username) -> AccountStatus            (.to_json() is the API body)
  file_appeal(username, decision_id, text) -> AppealRecord
Staff (the command line: `tidings server`'s first start, `tidings admin`):
  ensure_first_admin(username="admin") -> FirstAdmin | None   (only while no staff exist)
  operator() -> Principal     (the command-line operator, an admin; actor "operator:cli")
  create_staff(actor, *, username, roles, display_name=None, child_safety=False,
               queues=()) -> IssuedEnrolment  (enrolment token; roles and clearance pending:
               staff.approve_grant / staff.reject_grant by a second admin)
  add_to_queue(actor, staff_id, queue_id)
Review (with the facade's clock):
  claim(principal, case_id, *, duration_ms=DEFAULT_LOCK_MS)
  decide(principal, case_id, *, kind, policy_id, reason, until_ms=None) -> DecisionOutcome
  confirm(principal, case_id, *, reason) -> DecisionOutcome
  decide_appeal(principal, appeal_id, *, overturn, reason) -> DecisionOutcome
Audit and keys:
  verify_audit(principal=None, *, checkpoint=None) -> AuditVerification
  reencrypt_evidence(*, actor="system", batch=100) -> int    purge_expired_evidence() -> int

Enforcement: whichever path decides (these methods or the domain services directly, as the
console does), an enforcement is written through the enforcement repository, which this facade
wraps so ``on_enforcement(account)`` is called right after the row is stored: the composition
root wires it to wake the account's WebSockets, which re-check and close.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tidings.clock import DAY_MS, now_ms
from tidings.errors import ConflictError, InvalidCaseStateError, NotFoundError, SafetyInputError
from tidings.safety.audit import (
    AuditAction,
    AuditCheckpoint,
    AuditLog,
    AuditRepository,
    AuditVerification,
    InMemoryAuditRepository,
)
from tidings.safety.bank_match import BankMatcher, bank_hash_source
from tidings.safety.bank_memory import InMemoryBankRepository
from tidings.safety.bank_model import BankRepository
from tidings.safety.banks import BankService
from tidings.safety.case_memory import InMemoryCaseRepository, InMemoryEnforcementRepository
from tidings.safety.case_model import (
    DEFAULT_LOCK_MS,
    DEFAULT_POLICIES,
    AppealRecord,
    AppealStatus,
    CaseRecord,
    CaseRepository,
    DecisionKind,
    DecisionOutcome,
    Enforcement,
    EnforcementKind,
    EnforcementRepository,
    Policy,
)
from tidings.safety.cases import CaseService
from tidings.safety.categories import Queue, Router
from tidings.safety.detection_model import DetectionRepository, InMemoryDetectionRepository
from tidings.safety.evidence import (
    EvidenceKeyRing,
    EvidenceRepository,
    EvidenceVault,
    InMemoryEvidenceRepository,
)
from tidings.safety.holds import (
    REFERRAL_HOLD_DAYS,
    HoldKind,
    HoldRepository,
    HoldService,
    InMemoryHoldRepository,
    InMemorySubjectRecords,
    SubjectRecords,
)
from tidings.safety.inventory import RetentionSettings, inventory
from tidings.safety.lawful import LawfulRequestService
from tidings.safety.lawful_model import InMemoryLawfulRequestRepository, LawfulRequestRepository
from tidings.safety.lawful_sources import ProductionSources
from tidings.safety.passwords import StaffPasswordHasher
from tidings.safety.referral_records import InMemoryReferralRepository, ReferralRepository
from tidings.safety.referrals import ReferralPolicy, ReferralService
from tidings.safety.refusals import InMemoryRefusalCounter, RefusalCounter
from tidings.safety.reports import (
    AttachmentFetcher,
    FrankingKeyRing,
    InMemoryReportRepository,
    ReportIntake,
    ReportReceipt,
    ReportRepository,
    ReportSubmission,
)
from tidings.safety.staff import (
    InMemoryStaffRepository,
    IssuedEnrolment,
    Permission,
    Principal,
    Role,
    StaffAccount,
    StaffRepository,
    StaffService,
    TotpEnrolment,
    permissions_for,
)

if TYPE_CHECKING:
    from tidings.safety.detection import DetectionService

__all__ = [
    "EVIDENCE_PURGE_BATCH",
    "WARNING_VISIBLE_MS",
    "AccountStatus",
    "AppealState",
    "FirstAdmin",
    "SafetyRepositories",
    "SafetyService",
]

EVIDENCE_PURGE_BATCH = 1000
"""Most evidence records one `SafetyService.purge_expired_evidence` call deletes (one audit
entry per call: a bounded transaction count and audit details per purge round)."""

log = logging.getLogger("tidings.safety")

WARNING_VISIBLE_MS = 30 * DAY_MS
"""A warning shows in the account status for 30 days."""
OPERATOR_ID = "operator:cli"
_STATUS_OF: Mapping[EnforcementKind, str] = {
    EnforcementKind.BAN: "banned",
    EnforcementKind.SUSPEND: "suspended",
    EnforcementKind.RESTRICT: "restricted",
    EnforcementKind.WARN: "warned",
}
_SEVERITY: Mapping[EnforcementKind, int] = {
    EnforcementKind.BAN: 4,
    EnforcementKind.SUSPEND: 3,
    EnforcementKind.RESTRICT: 2,
    EnforcementKind.WARN: 1,
}


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppealState:
    state: str  # "open" or "decided"
    outcome: str | None = None  # "upheld" / "overturned" once decided

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.outcome is not None:
            out["outcome"] = self.outcome
        return out


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What ``GET /v1/account/status`` answers. ``reason`` is the title of the cited policy
    (the statement the user is given), never the reviewer's internal reasoning."""

    status: str  # active / warned / restricted / suspended / banned
    until_ms: int | None = None
    policy: str | None = None
    reason: str | None = None
    decision_id: str | None = None
    appeal: AppealState | None = None
    lawful_notices: tuple[dict[str, Any], ...] = ()
    """Due notices that data of the account was produced for a lawful request
    (`LawfulRequestService.notices_for`); the key is left out when there are none."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        for key in ("until_ms", "policy", "reason", "decision_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.appeal is not None:
            out["appeal"] = self.appeal.to_json()
        if self.lawful_notices:
            out["lawful_notices"] = list(self.lawful_notices)
        return out


@dataclass(frozen=True, slots=True)
class FirstAdmin:
    """Credentials of the bootstrap admin, to print once: its password and the TOTP
    enrolment (username, secret, otpauth:// URI) for its authenticator app."""

    password: str = field(repr=False)
    totp: TotpEnrolment


# --- repositories ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SafetyRepositories:
    audit: AuditRepository
    staff: StaffRepository
    reports: ReportRepository
    evidence: EvidenceRepository
    cases: CaseRepository
    enforcements: EnforcementRepository
    banks: BankRepository = field(default_factory=InMemoryBankRepository)
    close: Callable[[], None] = lambda: None
    migrate: Callable[[], None] = lambda: None
    detection: DetectionRepository | None = None
    """None: in memory over ``evidence`` (`tidings.safety.detection_model`)."""
    holds: HoldRepository = field(default_factory=InMemoryHoldRepository)
    subjects: SubjectRecords = field(default_factory=InMemorySubjectRecords)
    """The messaging records holds preserve (in memory: none, for tests of the rest)."""
    referrals: ReferralRepository = field(default_factory=InMemoryReferralRepository)
    lawful: LawfulRequestRepository = field(default_factory=InMemoryLawfulRequestRepository)
    refusals: RefusalCounter = field(default_factory=InMemoryRefusalCounter)
    """Refused-report counts per day and reason (`tidings.safety.refusals`)."""

    @classmethod
    def sql(
        cls, database_url: str, *, schema: str = "", staff_key: bytes | None = None
    ) -> SafetyRepositories:
        """SQL repositories on a synchronous engine for ``database_url`` (any spelling the
        server accepts); staff TOTP secrets sealed under ``staff_key`` (the ``staff.key`` file;
        a random per-process key if None, for tests only: secrets then do not survive a
        restart). Migrating also seals secrets left in the clear by older versions.
        Raises ValueError for a bad ``schema``."""
        from tidings.safety.sql import (
            SafetyDatabase,
            SqlAuditRepository,
            SqlBankRepository,
            SqlCaseRepository,
            SqlDetectionRepository,
            SqlEnforcementRepository,
            SqlEvidenceRepository,
            SqlHoldRepository,
            SqlLawfulRequestRepository,
            SqlReferralRepository,
            SqlRefusalCounter,
            SqlReportRepository,
            SqlStaffRepository,
            SqlSubjectRecords,
        )

        db = SafetyDatabase(database_url, schema=schema)
        staff = SqlStaffRepository(db, staff_key or secrets.token_bytes(32))

        def migrate() -> None:
            db.migrate()
            staff.seal_legacy()

        return cls(
            audit=SqlAuditRepository(db),
            staff=staff,
            reports=SqlReportRepository(db),
            evidence=SqlEvidenceRepository(db),
            cases=SqlCaseRepository(db),
            enforcements=SqlEnforcementRepository(db),
            banks=SqlBankRepository(db),
            close=db.dispose,
            migrate=migrate,
            detection=SqlDetectionRepository(db),
            holds=SqlHoldRepository(db),
            subjects=SqlSubjectRecords(db),
            referrals=SqlReferralRepository(db),
            lawful=SqlLawfulRequestRepository(db),
            refusals=SqlRefusalCounter(db),
        )

    @classmethod
    def in_memory(cls, **overrides: Any) -> SafetyRepositories:
        """Every repository in memory (a test's or a demo's world: nothing survives the
        process), with ``overrides`` (a field each, not ``evidence``, which the reports
        share) in place of the defaults."""
        evidence = InMemoryEvidenceRepository()
        repos = cls(
            audit=InMemoryAuditRepository(),
            staff=InMemoryStaffRepository(),
            reports=InMemoryReportRepository(evidence),
            evidence=evidence,
            cases=InMemoryCaseRepository(),
            enforcements=InMemoryEnforcementRepository(),
        )
        return replace(repos, **overrides)


class _NotifyingEnforcements:
    """An `EnforcementRepository` that calls ``callback(account)`` after storing or revoking an
    enforcement (the callback's failure is logged by class name and never undoes the row)."""

    def __init__(self, inner: EnforcementRepository, callback: Callable[[str], None]) -> None:
        self.inner = inner
        self._callback = callback
        self._accounts: dict[str, str] = {}
        """Enforcement id -> account of those read here: a revocation names only the id."""

    def add_enforcement(self, enforcement: Enforcement) -> None:
        self.inner.add_enforcement(enforcement)
        self._notify(enforcement.account)

    def _notify(self, account: str) -> None:
        try:
            self._callback(account)
        except Exception as exc:  # the row is stored; the server re-checks within seconds
            log.warning("enforcement callback failed: %s", type(exc).__name__)

    def _remember(self, found: list[Enforcement]) -> list[Enforcement]:
        self._accounts.update((e.enforcement_id, e.account) for e in found)
        return found

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]:
        return self._remember(self.inner.enforcements_for_decision(decision_id))

    def enforcements_for_account(self, account: str) -> list[Enforcement]:
        return self._remember(self.inner.enforcements_for_account(account))

    def revoke_enforcement(self, enforcement_id: str, revoked_ms: int) -> None:
        """Revoke, then notify (the messaging server's caches lift the enforcement at once;
        an id never read here is lifted by the caches' expiry instead)."""
        self.inner.revoke_enforcement(enforcement_id, revoked_ms)
        account = self._accounts.pop(enforcement_id, None)
        if account is not None:
            self._notify(account)


def _new_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


# --- the facade -----------------------------------------------------------------------------


class SafetyService:
    """See the module docstring for the API summary."""

    def __init__(
        self,
        repos: SafetyRepositories,
        *,
        franking_keys: FrankingKeyRing,
        evidence_keys: EvidenceKeyRing,
        fetcher: AttachmentFetcher,
        anchor_key: bytes | None = None,
        clock: Callable[[], int] = now_ms,
        on_enforcement: Callable[[str], None] | None = None,
        hasher: StaffPasswordHasher | None = None,
        router: Router | None = None,
        policies: Mapping[str, Policy] = DEFAULT_POLICIES,
        referral_policy: ReferralPolicy | None = None,
    ) -> None:
        self.repos = repos
        self.clock = clock
        self.router = router or Router()
        self.queues: Mapping[str, Queue] = self.router.queues
        self.policies: Mapping[str, Policy] = policies
        self.audit_repo = repos.audit
        self.staff_repo = repos.staff
        self.report_repo = repos.reports
        self.evidence_repo = repos.evidence
        self.case_repo = repos.cases
        self.enforcement_repo: EnforcementRepository = (
            _NotifyingEnforcements(repos.enforcements, on_enforcement)
            if on_enforcement is not None
            else repos.enforcements
        )
        self.audit = AuditLog(repos.audit, anchor_key=anchor_key)
        self.staff = StaffService(repos.staff, self.audit, queues=self.queues, hasher=hasher)
        self.vault = EvidenceVault(repos.evidence, evidence_keys, self.audit)
        self.cases = CaseService(
            cases=repos.cases,
            reports=repos.reports,
            enforcements=self.enforcement_repo,
            audit=self.audit,
            router=self.router,
            principals=self.staff.principal_for,
            policies=policies,
        )
        self.bank_repo = repos.banks
        self.banks = BankService(repos.banks, self.audit, clock=clock)
        self.bank_matcher = BankMatcher(bank_hash_source(self.banks))
        """Every active bank entry, indexed once per list version: reported attachments are
        matched against it, detection confirms against its device-eligible entries."""
        self.detection_repo: DetectionRepository | None = repos.detection
        if self.detection_repo is None and isinstance(repos.evidence, InMemoryEvidenceRepository):
            self.detection_repo = InMemoryDetectionRepository(repos.evidence)
        self.detection: DetectionService | None = None
        """Set by the composition root (`tidings.app.build_detection`)."""
        self.holds = HoldService(repos.holds, self.audit, repos.subjects, clock=clock)
        self.retention: RetentionSettings | None = None
        """The node's retention settings, for the data inventory (set by `tidings.app`)."""
        self.intake = ReportIntake(
            franking_keys=franking_keys,
            fetcher=fetcher,
            reports=repos.reports,
            vault=self.vault,
            cases=self.cases,
            audit=self.audit,
            matcher=self.bank_matcher,
            refusals=repos.refusals,
        )
        self.referral_repo = repos.referrals
        self.referrals = ReferralService(
            repository=repos.referrals,
            cases=repos.cases,
            reports=repos.reports,
            vault=self.vault,
            audit=self.audit,
            audit_repo=repos.audit,
            queue_for=self.cases.queue_for_case,
            is_staff=lambda actor: self.staff_repo.get_staff(actor) is not None,
            detection=self.detection_repo,
            policy=referral_policy,
            clock=clock,
        )
        """Referrals to NCMEC: its ``config`` (`load_referral_config`) and ``reporter`` (the
        provider's CyberTipline contact) are set by the composition root; until then preparing
        and submitting are refused with `ReferralConfigError`. A finished referral puts the
        account under a one-year preservation hold (`_hold_referred`)."""
        self.referrals.on_referred = self._hold_referred
        self.lawful = LawfulRequestService(
            repository=repos.lawful,
            audit=self.audit,
            holds=self.holds,
            subjects=repos.subjects,
            enforcements=self.enforcement_repo,
            categories=lambda: inventory(self.retention),
            clock=clock,
        )
        """Lawful requests: its ``allowed_domains`` and ``signing_key`` are set by the
        composition root (`tidings.app.build_safety`); until a key is set producing is refused
        with `LawfulConfigError`."""
        self.lawful.sources = ProductionSources(
            subjects=repos.subjects, cases=repos.cases, reports=repos.reports,
            evidence=repos.evidence, referrals=repos.referrals,
            detection=lambda: self.detection_repo,
        )

    def __repr__(self) -> str:
        return f"SafetyService(audit={type(self.audit_repo).__name__})"

    def _hold_referred(self, account: str, case_id: str, until_ms: int) -> None:
        """The account-level hold of a finished referral (18 U.S.C. 2258A(h): one year),
        placed by the system. Called again after a failure, it places no second hold for the
        same case."""
        if any(
            h.kind is HoldKind.REFERRAL and h.case_id == case_id
            for h in self.holds.active_for(account)
        ):
            return
        self.holds.place(
            None,
            account,
            HoldKind.REFERRAL,
            days=REFERRAL_HOLD_DAYS,
            reference=f"CyberTipline referral of {case_id}",
            case_id=case_id,
        )

    @classmethod
    def open(
        cls, database_url: str, *, schema: str = "", staff_key: bytes | None = None, **kwargs: Any
    ) -> SafetyService:
        """A service on SQL repositories (same keywords as the constructor; ``staff_key``: see
        `SafetyRepositories.sql`)."""
        repos = SafetyRepositories.sql(database_url, schema=schema, staff_key=staff_key)
        return cls(repos, **kwargs)

    def migrate(self) -> None:
        """Bring the database schema to the current version (no-op in memory)."""
        self.repos.migrate()

    def close(self) -> None:
        self.repos.close()

    # --- lookups for the console ----------------------------------------------------------

    def list_staff(self) -> list[StaffAccount]:
        lister = getattr(self.staff_repo, "list_staff", None)
        if lister is not None:
            accounts: list[StaffAccount] = lister()
            return accounts
        staff = getattr(self.staff_repo, "_staff", {})
        return sorted(staff.values(), key=lambda a: a.username)

    # --- users ----------------------------------------------------------------------------

    def submit_report(self, submission: ReportSubmission) -> ReportReceipt:
        """Verify, store (evidence encrypted) and route a report.

        Raises: every refusal of `ReportIntake.submit`; nothing is stored on any of them.
        """
        return self.intake.submit(submission, now_ms=self.clock())

    def _appeal_state(self, decision_id: str) -> AppealState | None:
        appeals = self.case_repo.appeals_for_decision(decision_id)
        if not appeals:
            return None
        appeal = appeals[-1]
        if appeal.status is AppealStatus.OPEN:
            return AppealState("open")
        return AppealState("decided", appeal.status.value)

    def _appeals_by(self, account: str) -> list[AppealRecord]:
        finder = getattr(self.case_repo, "appeals_by_account", None)
        if finder is not None:
            found: list[AppealRecord] = finder(account)
            return found
        appeals = getattr(self.case_repo, "appeals", {})
        return sorted(
            (a for a in appeals.values() if a.account == account), key=lambda a: a.filed_ms
        )

    def account_status(self, username: str) -> AccountStatus:
        """The account's most severe active enforcement (a warning shows for 30 days), the
        decision and policy behind it, and the state of its appeal. With nothing active but an
        appeal decided in the last 30 days (e.g. overturned), that appeal is shown. Due lawful
        request notices are added (a non-disclosure order keeps one back until it ends)."""
        status = self._enforcement_status(username)
        notices = tuple(n.to_json() for n in self.lawful.notices_for(username))
        return replace(status, lawful_notices=notices) if notices else status

    def _enforcement_status(self, username: str) -> AccountStatus:
        now = self.clock()
        active = [
            e
            for e in self.enforcement_repo.enforcements_for_account(username)
            if e.active(now)
            and (e.kind is not EnforcementKind.WARN or now - e.created_ms < WARNING_VISIBLE_MS)
        ]
        if not active:
            recent = [
                a
                for a in self._appeals_by(username)
                if a.decided_ms is not None and now - a.decided_ms < WARNING_VISIBLE_MS
            ]
            if recent:
                last = recent[-1]
                return AccountStatus(
                    "active",
                    decision_id=last.decision_id,
                    appeal=AppealState("decided", last.status.value),
                )
            return AccountStatus("active")
        worst = max(active, key=lambda e: (_SEVERITY[e.kind], e.until_ms is None, e.until_ms or 0))
        decision = self.case_repo.get_decision(worst.decision_id)
        policy = decision.policy_id if decision is not None else None
        known = self.policies.get(policy) if policy is not None else None
        title = known.title if known is not None else None
        return AccountStatus(
            status=_STATUS_OF[worst.kind],
            until_ms=worst.until_ms,
            policy=policy,
            reason=title,
            decision_id=worst.decision_id,
            appeal=self._appeal_state(worst.decision_id),
        )

    def file_appeal(self, username: str, decision_id: str, text: str) -> AppealRecord:
        """Appeal a final enforcing decision about ``username``.

        Raises:
            SafetyInputError: empty or over-long text.  NotFoundError: no such decision.
            PermissionDeniedError: not the decision's subject.  InvalidCaseStateError: not
            appealable (already appealed, dismissal, window closed).
        """
        if not isinstance(text, str) or not text.strip():
            raise SafetyInputError("an appeal needs a statement")
        if not isinstance(decision_id, str) or not decision_id or len(decision_id) > 64:
            raise NotFoundError("no such decision")
        try:
            return self.cases.file_appeal(
                username, decision_id, statement=text.strip(), now_ms=self.clock()
            )
        except ConflictError:
            raise InvalidCaseStateError("this decision was already appealed") from None

    # --- staff sign-in --------------------------------------------------------------------

    def ensure_first_admin(self, username: str = "admin") -> FirstAdmin | None:
        """Create the first admin (random password, fresh TOTP secret) if there are no staff
        at all; None otherwise (also when another node won the race)."""
        if self.staff_repo.count_staff() > 0:
            return None
        password = _new_password()
        try:
            account = self.staff.bootstrap_admin(username, password, now_ms=self.clock())
        except ConflictError:
            return None
        return FirstAdmin(password=password, totp=self.staff.totp_enrolment(account))

    def operator(self) -> Principal:
        """The operator at the command line: an admin's permissions (no queues, no evidence),
        recorded in the audit log as ``operator:cli``."""
        roles = frozenset({Role.ADMIN})
        return Principal(
            staff_id=OPERATOR_ID,
            username="operator",
            roles=roles,
            permissions=permissions_for(roles, child_safety=False),
            queues=frozenset(),
        )

    # --- staff management -----------------------------------------------------------------

    def create_staff(
        self,
        actor: Principal,
        *,
        username: str,
        roles: Iterable[Role | str],
        display_name: str | None = None,
        child_safety: bool = False,
        queues: Sequence[str] = (),
    ) -> IssuedEnrolment:
        """Create a staff account awaiting enrolment (no password, no TOTP secret: the returned
        token is for the owner), its roles and the clearance as pending grants, and queue
        memberships (each step audited). Everything is checked before anything is stored.

        Raises: as `StaffService.create_staff` and `add_to_queue`; SafetyInputError for an
        unknown role or queue, for queues with no reviewing role, and for a child-safety queue
        (joined once the clearance is approved).
        """
        try:
            role_set = [Role(r) for r in roles]
        except ValueError:
            raise SafetyInputError("unknown role") from None
        for queue_id in queues:
            queue = self.queues.get(queue_id)
            if queue is None:
                raise SafetyInputError(f"unknown queue {queue_id[:64]!r}")
            if queue.child_safety:
                raise SafetyInputError(
                    "child-safety queues are joined once the clearance is approved"
                )
        if queues and Permission.VIEW_QUEUE not in permissions_for(role_set, child_safety=False):
            raise SafetyInputError("queue membership needs a reviewing role")
        now = self.clock()
        issued = self.staff.create_staff(
            actor,
            username=username,
            display_name=display_name or username,
            roles=role_set,
            child_safety=child_safety,
            now_ms=now,
        )
        for queue_id in queues:
            self.staff.add_to_queue(actor, issued.account.staff_id, queue_id, now_ms=now)
        return issued

    def add_to_queue(self, actor: Principal, staff_id: str, queue_id: str) -> None:
        self.staff.add_to_queue(actor, staff_id, queue_id, now_ms=self.clock())

    # --- review ---------------------------------------------------------------------------

    def claim(
        self, principal: Principal, case_id: str, *, duration_ms: int = DEFAULT_LOCK_MS
    ) -> CaseRecord:
        return self.cases.claim(principal, case_id, now_ms=self.clock(), duration_ms=duration_ms)

    def decide(
        self,
        principal: Principal,
        case_id: str,
        *,
        kind: DecisionKind | str,
        policy_id: str,
        reason: str,
        until_ms: int | None = None,
    ) -> DecisionOutcome:
        return self.cases.decide(
            principal,
            case_id,
            kind=kind,  # type: ignore[arg-type]  # validated by CaseService
            policy_id=policy_id,
            reason=reason,
            now_ms=self.clock(),
            until_ms=until_ms,
        )

    def confirm(self, principal: Principal, case_id: str, *, reason: str) -> DecisionOutcome:
        return self.cases.confirm(principal, case_id, reason=reason, now_ms=self.clock())

    def decide_appeal(
        self, principal: Principal, appeal_id: str, *, overturn: bool, reason: str
    ) -> DecisionOutcome:
        return self.cases.decide_appeal(
            principal, appeal_id, overturn=overturn, reason=reason, now_ms=self.clock()
        )

    # --- audit and keys -------------------------------------------------------------------

    def verify_audit(
        self, principal: Principal | None = None, *, checkpoint: AuditCheckpoint | None = None
    ) -> AuditVerification:
        """Verify the whole chain (with the anchor key when configured). With a principal
        (the console), VIEW_AUDIT is required and the verification is itself audited."""
        if principal is not None:
            principal.require(Permission.VIEW_AUDIT)
        result = self.audit.verify(checkpoint)
        if principal is not None:
            self.audit.append(
                actor=principal.staff_id,
                action=AuditAction.AUDIT_VERIFY,
                target="audit:log",
                now_ms=self.clock(),
                details={
                    "ok": result.ok,
                    "checked": result.checked,
                    "first_bad_seq": result.first_bad_seq,
                },
            )
        return result

    def reencrypt_evidence(self, *, actor: str = "system", batch: int = 100) -> int:
        """Re-encrypt every evidence record not under the active key; returns how many."""
        total = 0
        while True:
            done = self.vault.reencrypt(actor=actor, now_ms=self.clock(), batch=batch)
            total += done
            if done == 0:
                return total

    def purge_expired_evidence(self, *, batch: int = EVIDENCE_PURGE_BATCH) -> int:
        """Delete evidence past retention and not on a preservation hold, at most ``batch``
        records per call; returns how many went. A call that deletes anything appends ONE audit
        entry (actor ``"system"``, `AuditAction.EVIDENCE_PURGE`, the count and the first ids);
        a backlog larger than ``batch`` drains over the following calls (the server calls this
        on every purge round, `tidings.app.purge_round`). Synchronous: async callers run it in
        a worker thread.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database is unreachable (the audit entry is
                written before the deletes, so none goes unrecorded; the next call retries).
        """
        return self.vault.purge_expired(now_ms=self.clock(), batch=batch)
