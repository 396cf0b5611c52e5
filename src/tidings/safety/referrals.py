"""`ReferralService`: a confirmed child-exploitation case becomes a CyberTipline report
(issue 11; docs/referrals.md).

The lifecycle of one referral, each step audited under the person who took it:

1. `prepare` (legal, ``MAKE_REFERRAL``): only for a case in state ``referred`` (two reviewers
   confirmed ``escalate_referral``) of category child sexual exploitation. The `Referral` is
   built from the case's own data: the reported account and its device ids, the incident time,
   every evidence file of the case (reported attachments, detection images) with its MD5 and
   PDQ computed from the plaintext opened through the vault (`EvidenceVault.export`: audited as
   ``evidence.export``), ``viewed_by_provider`` per file from the audit log (was an
   ``evidence.view`` of that record written for a staff member?), ``publicly_available`` False
   (a private conversation), the reporter the provider configured. Stored as a draft; the
   file bytes stay in the vault.
2. `approve` (a second person: `APPROVER`, legal or a lead, not the preparer): with
   ``ReferralPolicy(two_person=True)`` (the default) nothing is submitted before it.
3. `submit` (legal): reads the files from the vault again (audited), runs the
   `CyberTiplineClient` workflow, and stores the client's progress after every step through its
   sink before the client goes on (a versioned update: a crash resumes where the record says, a
   concurrent submit loses the race before it sends anything), each step also in the audit
   log. On ``finished``: a one-year preservation hold on the case's evidence
   (`REFERRAL_HOLD_MS`, 18 U.S.C. 2258A(h) as amended by the REPORT Act) and the optional
   ``on_referred(account, case_id, until_ms)`` hook (the account-level hold; it must be
   idempotent: a failure is retried by the next `submit`).
4. `retract` (legal): an open report through ``/retract`` (the API cancels only unfinished
   reports); a referral never sent is withdrawn locally. `reopen` (legal): after
   ``submit_uncertain`` or ``expired``, a person's decision, recorded.

Every method is synchronous except `submit_async` (`submit` runs it to completion).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from tidings.clock import DAY_MS, now_ms
from tidings.errors import (
    InvalidCaseStateError,
    InvalidReferralError,
    NotFoundError,
    ReferralConfigError,
    ReferralStateError,
    ReferralSubmitUncertainError,
    SameReviewerError,
    TidingsError,
)
from tidings.media.digests import content_digests
from tidings.media.pdq import hash_image
from tidings.safety.audit import AuditAction, AuditLog, AuditRepository, AuditsOneKind
from tidings.safety.case_core import require_text
from tidings.safety.case_model import CaseRecord, CaseRepository, CaseState, DecisionRecord
from tidings.safety.categories import Category, Queue
from tidings.safety.cybertip_client import (
    CyberTiplineClient,
    ReferralConfig,
    ReferralProgress,
    ReferralState,
    StepEvent,
)
from tidings.safety.detection_model import DetectionRepository
from tidings.safety.evidence import EvidenceRecord, EvidenceVault
from tidings.safety.referral_model import (
    CaptureEvent,
    ChatIncident,
    ContactPerson,
    DeviceId,
    Email,
    FileRelevance,
    IncidentSummary,
    IncidentType,
    Referral,
    ReferralFile,
    ReportedPerson,
    Reporter,
)
from tidings.safety.referral_records import (
    Approval,
    ReferralRecord,
    ReferralRepository,
    encode_referral,
    progress_to_json,
    progressed,
    with_step,
)
from tidings.safety.reports import ReportRepository
from tidings.safety.staff import Permission, Principal

__all__ = [
    "APPROVER",
    "ENV_CONTACT_EMAIL",
    "REFERRAL_HOLD_MS",
    "ReferralPolicy",
    "ReferralService",
    "ReferralView",
    "load_referrals",
]


REFERRAL_HOLD_MS: Final = 365 * DAY_MS
"""The preservation a finished report places on the case's evidence: one year (18 U.S.C.
2258A(h)(1) as amended by the REPORT Act of 2024, up from 90 days)."""

APPROVER: Final = Permission.APPROVE_REFERRAL
"""The second person's permission, held by legal and by leads (`tidings.safety.staff`): legal
answers for what goes to NCMEC, a lead holds the second-reviewer power the case's own
``escalate_referral`` needed. A reviewer has it not: approving a report to law enforcement is
a lead's or legal's call, never a peer reviewer's. Preparing, submitting, retracting and
reopening take ``MAKE_REFERRAL``, legal's alone."""

SERVICE_NAME: Final = "Tidings"
MAX_LIST: Final = 500
_ATTACHMENT_PREFIX: Final = "attachment:"
_REFERABLE: Final = frozenset({CaseState.REFERRED, CaseState.APPEALED})
_DETECTION_IMAGE: Final = "detection_image"
_EXTENSIONS: Final = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"))


def _file_name(evidence_id: str, data: bytes) -> str:
    """Our name for a file (Tidings keeps no original file names): the evidence id and an
    extension from the image's magic bytes, so NCMEC's analysts can open it."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return evidence_id + ".webp"
    for magic, ext in _EXTENSIONS:
        if data.startswith(magic):
            return evidence_id + ext
    return evidence_id + ".bin"


def _pdq(data: bytes) -> bytes | None:
    try:
        return hash_image(data).bits
    except TidingsError:  # not an image PDQ can read (a video, a document): MD5 only
        return None


@dataclass(frozen=True, slots=True)
class ReferralPolicy:
    """``two_person``: a second person (`APPROVER`, not the preparer) approves
    before anything is submitted (the default, and what issue 11 asks for)."""

    two_person: bool = True


@dataclass(frozen=True, slots=True)
class ReferralView:
    """One referral for a staff screen: the record and the `Referral` it will send."""

    record: ReferralRecord
    referral: Referral

    def to_json(self) -> dict[str, Any]:
        r = self.referral
        out = self.record.to_json()
        out["reported_account"] = r.reported_person.esp_identifier if r.reported_person else None
        out["incident_ms"] = r.summary.incident_ms
        out["incident_type"] = r.summary.incident_type.value
        out["file_list"] = [
            {
                "file_key": f.file_key,
                "file_name": f.file_name,
                "md5": f.md5.hex(),
                "pdq": f.pdq.hex() if f.pdq else None,
                "viewed_by_provider": f.viewed_by_provider,
                "publicly_available": f.publicly_available,
            }
            for f in r.files
        ]
        return out


class ReferralService(AuditsOneKind):
    """See the module docstring. ``queue_for(principal, case_id)`` is
    `tidings.safety.cases.CaseService.queue_for_case` (access checked); ``is_staff(actor)``
    tells a staff member's id from the system's (for the "viewed" flags); ``client_factory``
    builds the client for each submission (tests inject a transport); ``reporter`` is the
    provider's CyberTipline contact; ``config`` None: referrals are off (submission refused)."""

    audit_kind = "referral"

    def __init__(
        self,
        *,
        repository: ReferralRepository,
        cases: CaseRepository,
        reports: ReportRepository,
        vault: EvidenceVault,
        audit: AuditLog,
        audit_repo: AuditRepository,
        queue_for: Callable[[Principal, str], Queue],
        is_staff: Callable[[str], bool],
        detection: DetectionRepository | None = None,
        reporter: Reporter | None = None,
        config: ReferralConfig | None = None,
        client_factory: Callable[[ReferralConfig], CyberTiplineClient] = CyberTiplineClient,
        policy: ReferralPolicy | None = None,
        clock: Callable[[], int] = now_ms,
        on_referred: Callable[[str, str, int], None] | None = None,
        id_source: Callable[[], str] = lambda: "rf_" + os.urandom(12).hex(),
    ) -> None:
        self.repository = repository
        self._cases = cases
        self._reports = reports
        self._vault = vault
        self._audit = audit
        self._audit_repo = audit_repo
        self._queue_for = queue_for
        self._is_staff = is_staff
        self._detection = detection
        self.reporter = reporter
        self.config = config
        self.client_factory = client_factory
        self.policy = policy or ReferralPolicy()
        self._clock = clock
        self.on_referred = on_referred
        self._ids = id_source

    # --- reading ------------------------------------------------------------------------------

    def _get(self, referral_id: str) -> ReferralRecord:
        record = self.repository.get_referral(referral_id) if referral_id else None
        if record is None:
            raise NotFoundError("no such referral")
        return record

    def _readable(
        self, principal: Principal, referral_id: str, permission: Permission
    ) -> ReferralRecord:
        """The record, once ``principal`` holds ``permission`` and (for anything beyond the
        listing) the child-safety clearance: every referral is about child sexual
        exploitation.

        Raises:
            PermissionDeniedError: no ``permission``.  NotFoundError: no such referral.
            ChildSafetyPermissionError: no clearance.
        """
        principal.require(permission)
        record = self._get(referral_id)
        principal.require(Permission.CHILD_SAFETY)
        return record

    def list_referrals(
        self, principal: Principal, *, limit: int = 100, offset: int = 0
    ) -> list[ReferralRecord]:
        """Referrals, newest first (the records: ids, states, NCMEC's report ids; no file
        names or hashes); audited (``referral.list``).

        Raises:
            PermissionDeniedError: neither legal nor a lead (`APPROVER`).
        """
        principal.require(APPROVER)
        return self.list_as(principal.staff_id, limit=limit, offset=offset)

    def list_as(self, actor: str, *, limit: int = 100, offset: int = 0) -> list[ReferralRecord]:
        """`list_referrals` for an already authorised reader (the command-line operator),
        audited under ``actor``: records only, never file bytes or the document's free text."""
        limit = max(1, min(limit, MAX_LIST))
        found = self.repository.list_referrals(limit=limit, offset=max(0, offset))
        self._audit_on(actor, AuditAction.REFERRAL_LIST, "*", self._clock(),
                       {"count": len(found), "offset": offset})
        return found

    def view(self, principal: Principal, referral_id: str) -> ReferralView:
        """One referral and the document it sends; audited (``referral.view``).

        Raises:
            PermissionDeniedError: neither legal nor a lead (`APPROVER`).  NotFoundError.
            ChildSafetyPermissionError: without the clearance.
        """
        self._readable(principal, referral_id, APPROVER)
        return self.view_as(principal.staff_id, referral_id)

    def view_as(self, actor: str, referral_id: str) -> ReferralView:
        """`view` for an already authorised reader, audited under ``actor``."""
        record = self._get(referral_id)
        self._audit_on(actor, AuditAction.REFERRAL_VIEW, referral_id, self._clock(),
                       {"case": record.case_id})
        return ReferralView(record, record.referral())

    # --- 1. prepare ---------------------------------------------------------------------------

    def prepare(
        self,
        principal: Principal,
        case_id: str,
        *,
        incident_type: IncidentType = IncidentType.CHILD_PORNOGRAPHY,
        escalate_reason: str | None = None,
    ) -> ReferralRecord:
        """Build and store the draft referral of ``case_id`` (module docstring, step 1).

        Raises:
            PermissionDeniedError: no ``MAKE_REFERRAL``, or no access to the case's queue;
                ChildSafetyPermissionError without the clearance (also from the vault, which
                needs ``EXPORT_EVIDENCE``).
            NotFoundError: no such case.
            InvalidCaseStateError: the case is not ``referred``.
            InvalidReferralError: the case is not child sexual exploitation, or it has no
                evidence file to report.
            ReferralConfigError: no reporter (the provider's contact) is configured.
            ReferralStateError: the case already has a referral that is not retracted.
            ConflictError: another preparation of the same case won the race.
        Nothing is stored on any of them (the evidence openings that happened are audited).
        """
        principal.require(Permission.MAKE_REFERRAL)
        case = self._cases.get_case(case_id) if case_id else None
        if case is None:
            raise NotFoundError("no such case")
        principal.require(Permission.CHILD_SAFETY)
        queue = self._queue_for(principal, case_id)
        if case.state is not CaseState.REFERRED:
            raise InvalidCaseStateError(
                f"a {case.state.value} case cannot be referred (it must be confirmed first)"
            )
        if case.category is not Category.CHILD_SEXUAL_EXPLOITATION:
            raise InvalidReferralError("only child sexual exploitation is referred to NCMEC")
        if self.reporter is None:
            raise ReferralConfigError("no CyberTipline reporter contact is configured")
        earlier = self.repository.referrals_for_case(case_id)
        if any(r.state is not ReferralState.RETRACTED for r in earlier):
            raise ReferralStateError("this case already has a referral")
        now = self._clock()
        referral_id = self._ids()
        summary = (incident_type, escalate_reason)
        referral = self._build(principal, case, queue, referral_id, now, summary)
        record = ReferralRecord(
            referral_id=referral_id,
            case_id=case_id,
            seq=len(earlier) + 1,
            account=case.subject,
            prepared_by=principal.staff_id,
            prepared_ms=now,
            document=encode_referral(referral),
            progress=progress_to_json(ReferralProgress.start(referral)),
            file_count=len(referral.files),
            updated_ms=now,
        )
        self.repository.add_referral(record)
        self._audit_on(principal.staff_id, AuditAction.REFERRAL_PREPARE, referral_id, now, {
            "case": case_id,
            "files": len(referral.files),
            "viewed": sum(f.viewed_by_provider for f in referral.files),
        })
        return record

    def _evidence_of(self, case_id: str) -> list[tuple[EvidenceRecord, int, int | None]]:
        """(record, incident time, device) of every file of the case: reported attachments
        (not the "messages" record: that is the conversation, not a file) and detection
        images."""
        found: list[tuple[EvidenceRecord, int, int | None]] = []
        for report in self._reports.reports_for_case(case_id):
            if report.voided_ms is not None:
                continue
            for record in self._vault.records_for_report(report.report_id):
                if record.kind.startswith(_ATTACHMENT_PREFIX):
                    found.append((record, report.received_ms, report.subject_device))
        if self._detection is not None:
            for match in self._detection.matches_for_case(case_id):
                image = self._vault.repository.get_evidence(match.evidence_id)
                if image is not None:
                    found.append((image, match.matched_ms, match.device_id))
        return sorted(found, key=lambda f: (f[1], f[0].report_id, f[0].kind, f[0].evidence_id))

    def _viewed(self, evidence_ids: Iterable[str]) -> set[str]:
        """The evidence ids a staff member viewed (an ``evidence.view`` entry under a staff
        id: the vault writes it before it decrypts for a person). Exports (hashing for a
        referral, a lawful request) are not views."""
        targets = {f"evidence:{e}": e for e in evidence_ids}
        viewed: set[str] = set()
        for entry in self._audit_repo.entries():
            if (
                entry.action == AuditAction.EVIDENCE_VIEW.value
                and entry.target in targets
                and self._is_staff(entry.actor)
            ):
                viewed.add(targets[entry.target])
        return viewed

    def _final_decision(self, case: CaseRecord) -> DecisionRecord | None:
        if case.final_decision_id is None:
            return None
        return self._cases.get_decision(case.final_decision_id)

    def _build(
        self,
        principal: Principal,
        case: CaseRecord,
        queue: Queue,
        referral_id: str,
        now: int,
        summary: tuple[IncidentType, str | None],
    ) -> Referral:
        assert self.reporter is not None
        evidence = self._evidence_of(case.case_id)
        if not evidence:
            raise InvalidReferralError("the case holds no evidence file to report")
        viewed = self._viewed(r.evidence_id for r, _, _ in evidence)
        files = []
        for record, seen_ms, _ in evidence:
            opened = self._vault.export(
                record.evidence_id,
                principal=principal,
                queue=queue,
                case_id=case.case_id,
                purpose=f"referral {referral_id}: file hashes",
                now_ms=now,
            )
            data = opened.plaintext
            files.append(
                ReferralFile(
                    file_key=record.evidence_id,
                    file_name=_file_name(record.evidence_id, data),
                    viewed_by_provider=record.evidence_id in viewed,
                    md5=content_digests(data).md5,
                    publicly_available=False,
                    relevance=FileRelevance.REPORTED,
                    pdq=_pdq(data),
                    uploaded_ms=min(record.created_ms, seen_ms),
                )
            )
        devices = sorted({d for _, _, d in evidence if d is not None})
        decision = self._final_decision(case)
        how = "a verified user report" if any(
            r.kind.startswith(_ATTACHMENT_PREFIX) for r, _, _ in evidence
        ) else "a hash match (threshold detection)"
        return Referral(
            referral_id=referral_id,
            case_id=case.case_id,
            reviewed_by=decision.decided_by if decision and decision.decided_by else "reviewer",
            summary=IncidentSummary(
                summary[0],
                min(t for _, t, _ in evidence),
                escalate_reason=summary[1],
            ),
            reporter=self.reporter,
            reported_person=ReportedPerson(
                esp_identifier=case.subject,
                esp_service=SERVICE_NAME,
                screen_name=case.subject,
                device_ids=tuple(
                    DeviceId("Tidings device", f"{case.subject}/{d}", CaptureEvent.UPLOAD)
                    for d in devices
                ),
            ),
            chat_incidents=(ChatIncident(SERVICE_NAME),),
            files=tuple(files),
            additional_info=(
                f"Found through {how}; confirmed as child sexual exploitation by two "
                "reviewers of the provider's trust and safety team."
            ),
        )

    def _require_referable(self, case_id: str) -> None:
        """Before anything is approved or sent: the case still stands confirmed (``referred``,
        or ``appealed``: a user's appeal of the ban does not suspend the duty to report). An
        appeal granted (``overturned``) means nothing may be sent.

        Raises:
            InvalidCaseStateError: the case is in any other state (or gone).
        """
        case = self._cases.get_case(case_id)
        if case is None or case.state not in _REFERABLE:
            state = case.state.value if case is not None else "missing"
            raise InvalidCaseStateError(f"the case is {state}: the referral cannot go ahead")

    # --- 2. approve ---------------------------------------------------------------------------

    def approve(self, principal: Principal, referral_id: str) -> ReferralRecord:
        """The second person's approval. Who: a holder of `APPROVER` (legal, or a lead) with
        the child-safety clearance, and not the person who prepared it.

        Raises:
            PermissionDeniedError / ChildSafetyPermissionError: not such a person.
            SameReviewerError: the preparer approving their own referral.
            NotFoundError: no such referral.  ReferralStateError: already approved, or not a
                draft any more (retracted).  ConflictError: a concurrent change won.
            InvalidCaseStateError: the case no longer stands confirmed (overturned).
        """
        record = self._readable(principal, referral_id, APPROVER)
        if record.prepared_by == principal.staff_id:
            raise SameReviewerError("the person who prepared a referral cannot approve it")
        if record.approval is Approval.APPROVED:
            raise ReferralStateError("the referral is already approved")
        if record.state is not ReferralState.PENDING:
            raise ReferralStateError(f"a {record.state.value} referral cannot be approved")
        self._require_referable(record.case_id)
        now = self._clock()
        updated = replace(
            record,
            approval=Approval.APPROVED,
            approved_by=principal.staff_id,
            approved_ms=now,
            updated_ms=now,
            version=record.version + 1,
        )
        self.repository.update_referral(updated, record.version)
        self._audit_on(principal.staff_id, AuditAction.REFERRAL_APPROVE, referral_id, now,
                       {"case": record.case_id})
        return updated

    # --- 3. submit ----------------------------------------------------------------------------

    def submit(self, principal: Principal, referral_id: str) -> ReferralRecord:
        """`submit_async` run to completion (from synchronous code: a worker thread, the CLI,
        tests; not from inside a running event loop)."""
        return asyncio.run(self.submit_async(principal, referral_id))

    async def submit_async(self, principal: Principal, referral_id: str) -> ReferralRecord:
        """Send the referral to NCMEC, or resume it (module docstring, step 3). A finished
        referral is not sent again: its hold is (re)placed and it is returned.

        Raises:
            PermissionDeniedError / ChildSafetyPermissionError: no ``MAKE_REFERRAL``, no
                clearance or queue access, or no ``EXPORT_EVIDENCE`` (the vault).
            NotFoundError: no such referral.
            ReferralStateError: not approved (two-person policy), retracted, expired (reopen
                it); ReferralSubmitUncertainError: a person must `reopen` it.
            InvalidCaseStateError: nothing was sent yet and the case no longer stands
                confirmed (an appeal overturned it).
            ReferralConfigError: referrals are not configured.
            ClearinghouseError: (subclasses) as `CyberTiplineClient.send`; the record holds
                every step done, and a new `submit` resumes from there.
            ConflictError: a concurrent submission of the same referral (nothing sent here).
        """
        record = self._readable(principal, referral_id, Permission.MAKE_REFERRAL)
        queue = self._queue_for(principal, record.case_id)
        if self.policy.two_person and record.approval is not Approval.APPROVED:
            raise ReferralStateError("the referral awaits a second person's approval")
        if record.state is ReferralState.FINISHED:
            return self._finished(principal, record)
        if record.state is ReferralState.SUBMIT_UNCERTAIN:
            raise ReferralSubmitUncertainError()
        if record.state in {ReferralState.RETRACTED, ReferralState.EXPIRED}:
            raise ReferralStateError(f"the referral is {record.state.value}")
        if record.state is ReferralState.PENDING:
            self._require_referable(record.case_id)
        if self.config is None:
            raise ReferralConfigError("referrals are not configured ([referrals] url)")
        referral = record.referral()
        contents = {}
        for f in referral.files:
            opened = self._vault.export(
                f.file_key,
                principal=principal,
                queue=queue,
                case_id=record.case_id,
                purpose=f"referral {referral_id}: submission to NCMEC",
                now_ms=self._clock(),
            )
            contents[f.file_key] = opened.plaintext
        current = [record]

        async def sink(progress: ReferralProgress, event: StepEvent) -> None:
            # Stored (versioned) and audited before the client sends the next request.
            now = self._clock()
            updated = progressed(current[0], progress, event, now)
            self.repository.update_referral(updated, current[0].version)
            current[0] = updated
            self._audit_step(principal.staff_id, referral_id, event, now)

        client = self.client_factory(self.config)
        try:
            await client.send(referral, contents, sink, record.progress_value())
        finally:
            await client.aclose()
        return self._finished(principal, current[0])

    def _audit_step(self, actor: str, referral_id: str, event: StepEvent, now: int) -> None:
        details: dict[str, object] = {"step": event.step, "outcome": event.outcome}
        for key in ("report_id", "file_key", "response_code"):
            value = getattr(event, key)
            if value is not None:
                details[key] = value
        self._audit_on(actor, AuditAction.REFERRAL_SUBMIT_STEP, referral_id, now, details)

    def _finished(self, principal: Principal, record: ReferralRecord) -> ReferralRecord:
        """Place the preservation hold of a finished referral and call ``on_referred``, then
        record both. Each is idempotent (a hold only lengthens retention; the hook must be
        too), so a failure of either leaves the record without ``hold_until_ms`` and the next
        `submit` (which sends nothing) does them again: a hold is never recorded that was not
        placed.

        Raises:
            whatever the vault or the ``on_referred`` hook raises (the report itself stands).
        """
        if record.hold_until_ms is not None:
            return record
        now = self._clock()
        until = now + REFERRAL_HOLD_MS
        referral = record.referral()
        # The case's whole evidence, not only the files reported: the reported messages and
        # their context are what a later warrant for this report will ask for.
        held = {f.file_key for f in referral.files}
        for report in self._reports.reports_for_case(record.case_id):
            held.update(e.evidence_id for e in self._vault.repository.evidence_for_report(
                report.report_id
            ))
        self._vault.place_hold(
            sorted(held),
            until_ms=until,
            actor=principal.staff_id,
            reason=f"CyberTipline report {record.report_id}: 18 U.S.C. 2258A(h), one year",
            now_ms=now,
        )
        if self.on_referred is not None:
            self.on_referred(record.account, record.case_id, until)
        updated = replace(record, hold_until_ms=until, updated_ms=now, version=record.version + 1)
        self.repository.update_referral(updated, record.version)
        self._audit_on(principal.staff_id, AuditAction.REFERRAL_SUBMITTED, record.referral_id, now,
                       {"case": record.case_id, "report_id": record.report_id,
                        "files": record.file_count, "hold_until_ms": until})
        return updated

    # --- 4. retract and reopen ----------------------------------------------------------------

    def _person_step(
        self, principal: Principal, referral_id: str
    ) -> tuple[ReferralRecord, list[ReferralRecord], Callable[..., Any]]:
        record = self._readable(principal, referral_id, Permission.MAKE_REFERRAL)
        current = [record]

        async def sink(progress: ReferralProgress, event: StepEvent) -> None:
            updated = progressed(current[0], progress, event, self._clock())
            self.repository.update_referral(updated, current[0].version)
            current[0] = updated

        return record, current, sink

    def _at_clearinghouse(self, step: Callable[[CyberTiplineClient], Awaitable[object]]) -> None:
        """Run ``step`` (a person's step: retract, reopen) on a fresh client of the configured
        CyberTipline, to completion (from synchronous code), closing the client after it
        whatever happens.

        Raises:
            ReferralConfigError: referrals are not configured (nothing is run).
            whatever ``step`` raises.
        """
        if self.config is None:
            raise ReferralConfigError("referrals are not configured ([referrals] url)")
        client = self.client_factory(self.config)

        async def run() -> None:
            try:
                await step(client)
            finally:
                await client.aclose()

        asyncio.run(run())

    def retract(self, principal: Principal, referral_id: str, *, reason: str) -> ReferralRecord:
        """Retract (legal only: ``MAKE_REFERRAL``). An open report is retracted at NCMEC
        (``/retract``, which works only before ``/finish``); one never sent (pending) is
        withdrawn here, so the case may be prepared again.

        Raises:
            PermissionDeniedError: not legal.  NotFoundError.
            SafetyInputError: no reason.
            ReferralStateError: finished (NCMEC's own process), already retracted, or
                uncertain/expired (reopen or leave it).
            ClearinghouseError: (subclasses) NCMEC refused or failed; nothing changes here.
        """
        text = require_text(reason, "a reason", 2000)
        record, current, sink = self._person_step(principal, referral_id)
        now = self._clock()
        if record.state is ReferralState.PENDING:
            event = StepEvent(referral_id, "withdraw", "ok", now, by=principal.staff_id)
            updated = replace(
                record,
                state=ReferralState.RETRACTED,
                progress=progress_to_json(
                    replace(record.progress_value(), state=ReferralState.RETRACTED)
                ),
                steps=with_step(record, [event]),
                retracted_by=principal.staff_id,
                updated_ms=now,
                version=record.version + 1,
            )
            self.repository.update_referral(updated, record.version)
        else:
            self._at_clearinghouse(
                lambda client: client.retract(record.progress_value(), sink, by=principal.staff_id)
            )
            updated = replace(current[0], retracted_by=principal.staff_id,
                              version=current[0].version + 1)
            self.repository.update_referral(updated, current[0].version)
        self._audit_on(principal.staff_id, AuditAction.REFERRAL_RETRACT, referral_id, now,
                       {"case": record.case_id, "report_id": record.report_id,
                        "was": record.state.value, "reason": text[:500]})
        return updated

    def reopen(self, principal: Principal, referral_id: str, *, reason: str) -> ReferralRecord:
        """After ``submit_uncertain`` or ``expired``: legal decides the referral may be sent
        afresh (docs/referrals.md "No duplicate reports" says what to weigh); audited.

        Raises:
            PermissionDeniedError: not legal.  NotFoundError.  SafetyInputError: no reason.
            ReferralStateError: neither uncertain nor expired.
        """
        text = require_text(reason, "a reason", 2000)
        record, current, sink = self._person_step(principal, referral_id)
        if record.state not in {ReferralState.SUBMIT_UNCERTAIN, ReferralState.EXPIRED}:
            raise ReferralStateError(f"a {record.state.value} referral cannot be reopened")
        self._at_clearinghouse(
            lambda client: client.reopen(record.progress_value(), sink, by=principal.staff_id)
        )
        now = self._clock()
        self._audit_on(principal.staff_id, AuditAction.REFERRAL_REOPEN, referral_id, now,
                       {"case": record.case_id, "was": record.state.value,
                        "report_id": record.report_id, "reason": text[:500]})
        return current[0]


ENV_CONTACT_EMAIL: Final = "TIDINGS_CYBERTIP_CONTACT_EMAIL"
"""The reporting person's e-mail (NCMEC requires one), when ``[referrals.reporter]`` has none."""

_REPORTER_KEYS: Final = frozenset(
    {"email", "first_name", "last_name", "phone", "legal_url", "company_template"}
)


def load_referrals(
    table: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> tuple[ReferralConfig | None, Reporter | None]:
    """The ``[referrals]`` table (and the environment) as the client's configuration
    (`load_referral_config`) and the provider's contact, from its ``reporter`` sub-table
    (``email``, ``first_name``, ``last_name``, ``phone``, ``legal_url``,
    ``company_template``; ``TIDINGS_CYBERTIP_CONTACT_EMAIL`` wins for the e-mail). No e-mail:
    no reporter (preparing is then refused).

    Raises:
        ReferralConfigError: as `load_referral_config`; an unknown reporter key, or a value
            the referral model refuses (e.g. an e-mail address that is not one).
    """
    from tidings.safety.cybertip_client import load_referral_config

    values = dict(table or {})
    raw = values.pop("reporter", {})
    if not isinstance(raw, Mapping) or not set(raw) <= _REPORTER_KEYS:
        names = ", ".join(sorted(_REPORTER_KEYS))
        raise ReferralConfigError(f"[referrals.reporter] takes only: {names}")
    contact = {k: str(v) for k, v in raw.items()}
    environ = os.environ if env is None else env
    if environ.get(ENV_CONTACT_EMAIL):
        contact["email"] = environ[ENV_CONTACT_EMAIL]
    config = load_referral_config(values, env)
    if not contact.get("email"):
        return config, None
    try:
        person = ContactPerson(
            contact.get("first_name"),
            contact.get("last_name"),
            (Email(contact["email"]),),
            (contact["phone"],) if contact.get("phone") else (),
        )
        reporter = Reporter(
            person,
            company_template=contact.get("company_template"),
            legal_url=contact.get("legal_url"),
        )
    except InvalidReferralError as exc:
        raise ReferralConfigError(f"[referrals.reporter]: {exc.message}") from None
    return config, reporter
