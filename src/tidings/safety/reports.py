"""Verification and intake of abuse reports (message franking, transcript franking, attachments).

A `ReportSubmission` is what a reporter's client sends: its account and device, a category,
a run of `ReportItem`s (the reported message and up to N messages around it, in server
timestamp order), which of them is the reported one, and, for reported attachments, the
revealed attachment keys.

`verify_submission` checks, in this order, and raises at the first failure (each error names
the exact reason; see docs/protocol.md "Message franking"):

1. shape: 1..256 items, the reported index in range, a known category, attachment references
   that point at an attachment of a reported item, at most `MAX_REPORTED_ATTACHMENTS`, a short
   comment — `InvalidReportError`;
2. the reporter (account, device) is the *recipient* named in every item's tag: one can report
   only what one received — `ReporterNotRecipientError`;
3. every item: the commitment opens (`CommitmentMismatchError`: altered text, swapped franking
   key) and a server franking key valid at the item's server timestamp verifies the tag
   (`InvalidFrankingTagError`: another sender, another message's tag, a forged tag);
4. the run is an unbroken excerpt of *one* conversation — the group named in the reported
   message, or for a 1:1 message ``direct_conversation_id(sender, reporter)`` —
   (`ContextChainError`, whose message starts with a `tidings.crypto.franking.ChainFault`);
5. (in `ReportIntake`) not a replay: the same report (`ReportReplayError`) or the same message
   already reported by this reporter (`MessageAlreadyReportedError`);
6. every reported attachment: the revealed key is the one in the franked pointer
   (`AttachmentKeyMismatchError`), the server still holds the ciphertext
   (`AttachmentUnavailableError`), which matches the pointer's digest and size and opens under
   the key (`AttachmentError`).

7. (in `ReportIntake`, with a matcher) every verified attachment is matched in the clear
   against every active hash-bank entry (`tidings.safety.bank_match`: PDQ within distance 31
   over the 8 dihedral hashes, exact MD5 / SHA-256; a non-image by its digests only). The
   matches are stored with the report (`ReportMatch`), its evidence is sealed as child-safety
   evidence and its case is routed as child sexual exploitation, whatever category the
   reporter chose (the report keeps the chosen one); an audit entry by ``system`` names the
   matched banks and entries.

Nothing is stored for a refused report: evidence is sealed in memory and stored, with the
report and its replay keys, in one repository call, only after every check passed. The replay
keys are unique in storage, so two concurrent copies of one report cannot both be stored.

Franking keys rotate: `FrankingKeyRing` holds every server franking key still in use with the
period during which it *tagged*; an item is checked against the key(s) whose period covers its
server timestamp (periods may overlap during a rolling rotation).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from tidings.crypto import attachment, franking
from tidings.crypto.franking import ReportItem
from tidings.crypto.primitives import constant_time_equal, sha256
from tidings.errors import (
    AttachmentKeyMismatchError,
    AttachmentUnavailableError,
    CommitmentMismatchError,
    InvalidFrankingTagError,
    InvalidKeyError,
    InvalidReportError,
    MessageAlreadyReportedError,
    ReporterNotRecipientError,
    ReportReplayError,
    TidingsError,
)
from tidings.safety.audit import AuditAction, AuditLog
from tidings.safety.bank_match import MatchedEntry, MediaMatch
from tidings.safety.categories import Category, ConversationKind, RoutingInput
from tidings.safety.evidence import (
    KIND_MESSAGES,
    EvidenceRecord,
    EvidenceVault,
    InMemoryEvidenceRepository,
    attachment_kind,
    encode_items,
)
from tidings.safety.memory_rows import insert_new
from tidings.safety.refusals import RefusalCounter
from tidings.wire import pb
from tidings.wire.binary import u8, u32, var16, var32
from tidings.wire.report import MAX_REPORT_NOTE_CHARS, MAX_REPORTED_ATTACHMENTS

_log = logging.getLogger("tidings.safety.reports")

__all__ = [
    "AttachmentFetcher",
    "AttachmentReveal",
    "CaseSink",
    "FrankingKey",
    "FrankingKeyRing",
    "InMemoryReportRepository",
    "ItemRole",
    "MediaMatcher",
    "ReplayKey",
    "ReportIntake",
    "ReportMatch",
    "ReportReceipt",
    "ReportRecord",
    "ReportRepository",
    "ReportStatus",
    "ReportSubmission",
    "ReportedItemRecord",
    "VerifiedAttachment",
    "VerifiedReport",
    "replay_keys",
    "verify_attachments",
    "verify_submission",
]

_REPORT_DIGEST_LABEL = b"Tidings_ReportReplay_Report_v1"
_MESSAGE_KEY_LABEL = b"Tidings_ReportReplay_Message_v1"
_AUDITED_ENTRIES = 20
"""Matched entries per attachment named in the audit entry (the rest are on the case)."""


# --- franking key ring ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrankingKey:
    """A server franking key and the period in which it tagged envelopes:
    ``valid_from_ms <= server_timestamp_ms < valid_until_ms`` (None: still tagging)."""

    key_id: str
    key: bytes = field(repr=False)
    valid_from_ms: int = 0
    valid_until_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != franking.SERVER_FRANKING_KEY_LEN:
            raise InvalidKeyError("server franking key must be 32 bytes")

    def covers(self, timestamp_ms: int) -> bool:
        return self.valid_from_ms <= timestamp_ms and (
            self.valid_until_ms is None or timestamp_ms < self.valid_until_ms
        )


class FrankingKeyRing:
    """Every server franking key whose tags may still be reported (keep a key as long as
    messages tagged under it may be reported, docs/protocol.md "Key lifetimes")."""

    def __init__(self, keys: Iterable[FrankingKey]) -> None:
        self._keys = list(keys)
        if not self._keys:
            raise InvalidKeyError("the franking key ring is empty")
        if len({k.key_id for k in self._keys}) != len(self._keys):
            raise InvalidKeyError("duplicate franking key id")

    def __repr__(self) -> str:
        return f"FrankingKeyRing(ids={[k.key_id for k in self._keys]})"

    def candidates(self, timestamp_ms: int) -> list[FrankingKey]:
        return [k for k in self._keys if k.covers(timestamp_ms)]

    def verify_item(self, item: ReportItem) -> tuple[pb.Content, str]:
        """`franking.verify_report_item` under the key(s) covering the item's timestamp;
        returns the Content and the id of the key that verified.

        Raises:
            CommitmentMismatchError: the commitment does not open (independent of the key).
            InvalidFrankingTagError: no covering key verifies the tag (or none covers it).
            DecodeError: the committed content is not a valid Content.
        """
        candidates = self.candidates(item.server_timestamp_ms)
        if not candidates:
            # Check the commitment anyway so an altered item is reported as altered.
            if not constant_time_equal(
                franking.compute_commitment(item.franking_key, item.content), item.commitment
            ):
                raise CommitmentMismatchError()
            raise InvalidFrankingTagError("no server franking key covers the item's timestamp")
        for key in candidates:
            try:
                return franking.verify_report_item(key.key, item), key.key_id
            except InvalidFrankingTagError:
                continue
        raise InvalidFrankingTagError()


# --- submission and results -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachmentReveal:
    """The reporter reveals attachment ``attachment_index`` of item ``item_index``'s
    DataMessage by giving its key."""

    item_index: int
    attachment_index: int
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReportSubmission:
    """An incoming report (already decoded from the API request)."""

    reporter: str
    reporter_device: int
    category: str
    items: tuple[ReportItem, ...]
    reported_index: int
    attachments: tuple[AttachmentReveal, ...] = ()
    comment: str = field(default="", repr=False)


class ItemRole(StrEnum):
    REPORTED = "reported"
    CONTEXT = "context"


@dataclass(frozen=True, slots=True)
class VerifiedAttachment:
    item_index: int
    attachment_index: int
    attachment_id: str
    content_type: str
    plaintext: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class VerifiedReport:
    """A submission whose items verified (attachments are checked separately, after the
    replay check, because fetching them is the expensive part)."""

    submission: ReportSubmission = field(repr=False)
    category: Category
    contents: tuple[pb.Content, ...] = field(repr=False)
    key_ids: tuple[str, ...]
    conversation_kind: ConversationKind
    conversation_id: bytes

    @property
    def reported(self) -> ReportItem:
        return self.submission.items[self.submission.reported_index]


def _check_shape(submission: ReportSubmission) -> Category:
    items = submission.items
    if not isinstance(items, tuple) or not items:
        raise InvalidReportError("a report needs at least one item")
    if len(items) > franking.MAX_CONTEXT_ITEMS:
        raise InvalidReportError(f"a report holds at most {franking.MAX_CONTEXT_ITEMS} items")
    if not all(isinstance(i, ReportItem) for i in items):
        raise InvalidReportError("report items are malformed")
    index = submission.reported_index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(items):
        raise InvalidReportError("the reported item index is out of range")
    try:
        category = Category(submission.category)
    except ValueError:
        raise InvalidReportError("unknown report category") from None
    if not isinstance(submission.comment, str) or len(submission.comment) > MAX_REPORT_NOTE_CHARS:
        raise InvalidReportError(f"the comment is longer than {MAX_REPORT_NOTE_CHARS} characters")
    reveals = submission.attachments
    if len(reveals) > MAX_REPORTED_ATTACHMENTS:
        raise InvalidReportError(f"at most {MAX_REPORTED_ATTACHMENTS} attachments per report")
    refs = [(r.item_index, r.attachment_index) for r in reveals]
    if len(set(refs)) != len(refs):
        raise InvalidReportError("an attachment is revealed twice")
    for item_index, _ in refs:
        if not isinstance(item_index, int) or not 0 <= item_index < len(items):
            raise InvalidReportError("an attachment reference names no item")
    return category


def verify_submission(keys: FrankingKeyRing, submission: ReportSubmission) -> VerifiedReport:
    """Checks 1-4 of the module docstring (pure; no storage, no attachments).

    Raises:
        InvalidReportError, ReporterNotRecipientError, CommitmentMismatchError,
        InvalidFrankingTagError, ContextChainError, DecodeError: see the module docstring.
    """
    category = _check_shape(submission)
    for item in submission.items:
        if (item.recipient, item.recipient_device) != (
            submission.reporter,
            submission.reporter_device,
        ):
            raise ReporterNotRecipientError()
    verified = [keys.verify_item(item) for item in submission.items]
    contents = tuple(content for content, _ in verified)
    reported_item = submission.items[submission.reported_index]
    reported = contents[submission.reported_index]
    if reported.HasField("data") and reported.data.HasField("group"):
        kind = ConversationKind.GROUP
        expected = franking.group_conversation_id(reported.data.group.group_id)
    else:
        kind = ConversationKind.DIRECT
        expected = franking.direct_conversation_id(reported_item.sender, submission.reporter)
    # Same checks as franking.verify_report (tags were checked above, per key).
    franking.verify_context_chain(submission.items, expected_conversation_id=expected)
    for reveal in submission.attachments:
        body = contents[reveal.item_index]
        count = len(body.data.attachments) if body.HasField("data") else 0
        if not isinstance(reveal.attachment_index, int) or not 0 <= reveal.attachment_index < count:
            raise InvalidReportError("an attachment reference names no attachment of its item")
    return VerifiedReport(
        submission=submission,
        category=category,
        contents=contents,
        key_ids=tuple(key_id for _, key_id in verified),
        conversation_kind=kind,
        conversation_id=expected,
    )


class AttachmentFetcher(Protocol):
    """Reads stored attachment ciphertext (the server's attachment store)."""

    def fetch(self, attachment_id: str) -> bytes | None:
        """The ciphertext of ``attachment_id``, or None if it is not (or no longer) stored."""
        ...


def verify_attachments(
    report: VerifiedReport, fetcher: AttachmentFetcher
) -> list[VerifiedAttachment]:
    """Check 6 of the module docstring for every revealed attachment.

    Raises:
        AttachmentKeyMismatchError: the revealed key is not the franked pointer's key.
        AttachmentUnavailableError: the ciphertext is gone.
        AttachmentError: digest, size or key commitment mismatch; corrupt ciphertext.
    """
    out: list[VerifiedAttachment] = []
    for reveal in report.submission.attachments:
        pointer = report.contents[reveal.item_index].data.attachments[reveal.attachment_index]
        # The pointer (key, digest) is inside the franked Content, so it is what the sender
        # sent; the revealed key must be that key, not one the reporter chose.
        if not isinstance(reveal.key, bytes) or not constant_time_equal(reveal.key, pointer.key):
            raise AttachmentKeyMismatchError()
        ciphertext = fetcher.fetch(pointer.id)
        if ciphertext is None:
            raise AttachmentUnavailableError()
        try:
            plaintext = attachment.decrypt_bytes(
                reveal.key, ciphertext, pointer.digest, expected_size=pointer.size
            )
        except InvalidKeyError:
            raise AttachmentKeyMismatchError() from None
        out.append(
            VerifiedAttachment(
                item_index=reveal.item_index,
                attachment_index=reveal.attachment_index,
                attachment_id=pointer.id,
                content_type=pointer.content_type,
                plaintext=plaintext,
            )
        )
    return out


# --- replay keys ----------------------------------------------------------------------------


class ReplayKind(StrEnum):
    REPORT = "report"
    MESSAGE = "message"


@dataclass(frozen=True, slots=True)
class ReplayKey:
    """A row of the seen-set: ``key`` is unique in storage."""

    key: str
    kind: ReplayKind


def replay_keys(submission: ReportSubmission) -> tuple[ReplayKey, ReplayKey]:
    """(whole-report digest, (reporter, reported commitment)) — both hex SHA-256.

    The message key uses the commitment, not the message id: the copies of one message
    delivered to a reporter's several devices have different ids but one commitment.
    """
    reporter = submission.reporter.encode("utf-8")
    parts = [
        _REPORT_DIGEST_LABEL,
        var16(reporter),
        u32(submission.reporter_device),
        var16(submission.category.encode("utf-8")),
        u32(submission.reported_index),
        u32(len(submission.items)),
    ]
    parts += [var32(item.encode()) for item in submission.items]
    parts += [
        u32(r.item_index) + u32(r.attachment_index) + var16(r.key) for r in submission.attachments
    ]
    parts.append(var32(submission.comment.encode("utf-8")))
    reported = submission.items[submission.reported_index]
    return (
        ReplayKey(sha256(b"".join(parts)).hex(), ReplayKind.REPORT),
        ReplayKey(
            sha256(_MESSAGE_KEY_LABEL + var16(reporter) + u8(0) + reported.commitment).hex(),
            ReplayKind.MESSAGE,
        ),
    )


def _raise_replay(kinds: Iterable[ReplayKind]) -> None:
    kinds = set(kinds)
    if ReplayKind.REPORT in kinds:
        raise ReportReplayError()
    if ReplayKind.MESSAGE in kinds:
        raise MessageAlreadyReportedError()


# --- records and repository -----------------------------------------------------------------


class ReportStatus(StrEnum):
    ACCEPTED = "accepted"
    VOIDED = "voided"  # the reporter was found to report in bad faith


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """A stored, verified report (a row). No content: that is in the evidence records."""

    report_id: str
    reporter: str
    reporter_device: int
    subject: str
    subject_device: int
    category: Category
    conversation_kind: ConversationKind
    conversation_id: bytes
    reported_message_id: bytes
    received_ms: int
    item_count: int
    attachment_count: int
    status: ReportStatus = ReportStatus.ACCEPTED
    case_id: str | None = None
    voided_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ReportedItemRecord(franking.TaggedFields):
    """Per-item verification record shown in the case view: what was verified and how (the
    fields the server's tag vouched for, from `franking.TaggedFields`, and their checks).

    Stored items always have ``franking_verified`` and ``chain_verified`` True (a report with
    any failing item is refused whole); the flags are stored so the console shows them
    explicitly, and so a future import path that stores unverified items cannot hide it.

    Raises (on construction):
        DecodeError: a tagged field is malformed (see `franking.TaggedFields`).
    """

    report_id: str
    index: int
    role: ItemRole
    franking_key_id: str
    franking_verified: bool
    chain_verified: bool
    attachments_verified: int


@dataclass(frozen=True, slots=True)
class ReportMatch:
    """A reported attachment that matched hash-bank entries (a row per attachment): which
    one (item, attachment index, attachment id), its SHA-256 and PDQ hash (None: not an image
    that hashes), the best distance and every matched entry (bank, id, signal type, distance,
    sources) as the banks stood when the report arrived."""

    report_id: str
    item_index: int
    attachment_index: int
    attachment_id: str
    sha256: bytes
    pdq: bytes | None
    distance: int
    entries: tuple[MatchedEntry, ...]
    matched_ms: int


class ReportRepository(Protocol):
    """Storage of reports (SQL: ``report``, ``report_item(report_id, index)``,
    ``report_replay(key UNIQUE, kind, report_id)``, plus evidence rows)."""

    def seen_replay_keys(self, keys: Sequence[str]) -> list[ReplayKey]:
        """The stored replay keys among ``keys``."""
        ...

    def store_verified_report(
        self,
        report: ReportRecord,
        items: Sequence[ReportedItemRecord],
        evidence: Sequence[EvidenceRecord],
        replay: Sequence[ReplayKey],
        matches: Sequence[ReportMatch] = (),
    ) -> None:
        """Store all of it (and the attachments' bank matches) atomically (one transaction).
        If any replay key exists, store nothing and raise `ReportReplayError` (or
        `MessageAlreadyReportedError` when only the message key exists)."""
        ...

    def get_report(self, report_id: str) -> ReportRecord | None: ...

    def update_report(self, report: ReportRecord) -> None: ...

    def reports_for_case(self, case_id: str) -> list[ReportRecord]: ...

    def reports_by_reporter(self, reporter: str) -> list[ReportRecord]: ...

    def items_for_report(self, report_id: str) -> list[ReportedItemRecord]: ...

    def matches_for_report(self, report_id: str) -> list[ReportMatch]:
        """The report's bank matches, by (item index, attachment index)."""
        ...


class InMemoryReportRepository:
    """`ReportRepository` in memory. Also stores evidence into an
    `tidings.safety.evidence.InMemoryEvidenceRepository` given at construction (the two share
    one "transaction")."""

    def __init__(self, evidence: InMemoryEvidenceRepository) -> None:
        self._evidence = evidence
        self.reports: dict[str, ReportRecord] = {}
        self.items: dict[str, list[ReportedItemRecord]] = {}
        self.matches: dict[str, list[ReportMatch]] = {}
        self.replay: dict[str, ReplayKey] = {}
        self._lock = threading.Lock()

    def seen_replay_keys(self, keys: Sequence[str]) -> list[ReplayKey]:
        return [self.replay[k] for k in keys if k in self.replay]

    def store_verified_report(
        self,
        report: ReportRecord,
        items: Sequence[ReportedItemRecord],
        evidence: Sequence[EvidenceRecord],
        replay: Sequence[ReplayKey],
        matches: Sequence[ReportMatch] = (),
    ) -> None:
        with self._lock:
            _raise_replay(k.kind for k in replay if k.key in self.replay)
            insert_new(self.reports, report.report_id, report, conflict="report id exists")
            self.items[report.report_id] = list(items)
            if matches:
                self.matches[report.report_id] = list(matches)
            for record in evidence:
                self._evidence.add_evidence(record)
            for key in replay:
                self.replay[key.key] = key

    def get_report(self, report_id: str) -> ReportRecord | None:
        return self.reports.get(report_id)

    def update_report(self, report: ReportRecord) -> None:
        if report.report_id in self.reports:
            self.reports[report.report_id] = report

    def reports_for_case(self, case_id: str) -> list[ReportRecord]:
        return [r for r in self.reports.values() if r.case_id == case_id]

    def reports_by_reporter(self, reporter: str) -> list[ReportRecord]:
        return [r for r in self.reports.values() if r.reporter == reporter]

    def items_for_report(self, report_id: str) -> list[ReportedItemRecord]:
        return list(self.items.get(report_id, []))

    def matches_for_report(self, report_id: str) -> list[ReportMatch]:
        found = self.matches.get(report_id, [])
        return sorted(found, key=lambda m: (m.item_index, m.attachment_index))


# --- intake ---------------------------------------------------------------------------------


class CaseSink(Protocol):
    """Where accepted reports go (implemented by `tidings.safety.cases.CaseService`)."""

    def attach_report(self, report: ReportRecord, routing: RoutingInput, *, now_ms: int) -> str:
        """Open or join the case for ``report``; returns the case id."""
        ...


class MediaMatcher(Protocol):
    """Matches plaintext against the hash banks (`tidings.safety.bank_match.BankMatcher`)."""

    def match_media(self, plaintext: bytes) -> MediaMatch: ...


@dataclass(frozen=True, slots=True)
class ReportReceipt:
    """What the reporter is told: the report id and that it was accepted."""

    report_id: str
    case_id: str


def _default_id() -> str:
    return os.urandom(16).hex()


@dataclass(eq=False, repr=False, kw_only=True, slots=True)  # no repr: it holds the key ring
class ReportIntake:
    """Verify, seal and store one report, then hand it to the case service.

    ``matcher`` (None: no bank matching) matches every verified attachment against every
    active hash-bank entry — the provider legitimately sees what a reporter reveals, so not
    only the two-jurisdiction device list (check 7 of the module docstring).

    If the case step fails after the report was stored, the report is kept with ``case_id``
    None (the evidence is safe). Not yet handled: a sweeper that re-attaches such reports, or
    (better) one SQL transaction around `store_verified_report` and `attach_report`.
    """

    franking_keys: FrankingKeyRing
    fetcher: AttachmentFetcher
    reports: ReportRepository
    vault: EvidenceVault
    cases: CaseSink
    audit: AuditLog
    id_source: Callable[[], str] = _default_id
    matcher: MediaMatcher | None = None
    refusals: RefusalCounter | None = None
    """Counts refused reports per UTC day and reason code (`tidings.safety.refusals`)."""

    def _count_refusal(self, now_ms: int, refused: TidingsError) -> None:
        """Count a refusal; a failing counter is logged (by class name) and never replaces
        the refusal's own error."""
        if self.refusals is None:
            return
        try:
            self.refusals.increment(now_ms, refused.code)
        except Exception as exc:
            _log.warning("refused-report count failed: %s", type(exc).__name__)

    def submit(self, submission: ReportSubmission, *, now_ms: int) -> ReportReceipt:
        """Verify and accept a report.

        Raises:
            Every error of `verify_submission` and `verify_attachments`, and
            ReportReplayError / MessageAlreadyReportedError. Nothing of the report is stored on
            any error; a refusal by verification is counted (day and reason code only,
            ``refusals``).
        """
        try:
            verified = verify_submission(self.franking_keys, submission)
            replay = replay_keys(submission)
            # Early refusal before the expensive attachment work; the store re-checks
            # atomically.
            _raise_replay(k.kind for k in self.reports.seen_replay_keys([k.key for k in replay]))
            attachments = verify_attachments(verified, self.fetcher)
        except TidingsError as refused:
            self._count_refusal(now_ms, refused)  # the count only: nothing of the report
            raise

        report_id = "rep_" + self.id_source()
        matches = self._match(report_id, attachments, now_ms)
        reported = verified.reported
        # A listed attachment makes the report child-safety whatever the reporter chose.
        category = Category.CHILD_SEXUAL_EXPLOITATION if matches else verified.category
        child_safety = category is Category.CHILD_SEXUAL_EXPLOITATION
        evidence = [
            self.vault.seal(
                evidence_id="ev_" + self.id_source(),
                report_id=report_id,
                kind=KIND_MESSAGES,
                plaintext=encode_items(submission.items),
                child_safety=child_safety,
                now_ms=now_ms,
            )
        ]
        if submission.comment:
            evidence.append(
                self.vault.seal(
                    evidence_id="ev_" + self.id_source(),
                    report_id=report_id,
                    kind="comment",
                    plaintext=submission.comment.encode("utf-8"),
                    child_safety=child_safety,
                    now_ms=now_ms,
                )
            )
        evidence += [
            self.vault.seal(
                evidence_id="ev_" + self.id_source(),
                report_id=report_id,
                kind=attachment_kind(a.item_index, a.attachment_index),
                plaintext=a.plaintext,
                child_safety=child_safety,
                now_ms=now_ms,
            )
            for a in attachments
        ]
        per_item = [0] * len(submission.items)
        for a in attachments:
            per_item[a.item_index] += 1
        items = [
            ReportedItemRecord(
                report_id=report_id,
                index=i,
                role=ItemRole.REPORTED if i == submission.reported_index else ItemRole.CONTEXT,
                **franking.tagged_fields(item),
                franking_key_id=verified.key_ids[i],
                franking_verified=True,
                chain_verified=True,
                attachments_verified=per_item[i],
            )
            for i, item in enumerate(submission.items)
        ]
        record = ReportRecord(
            report_id=report_id,
            reporter=submission.reporter,
            reporter_device=submission.reporter_device,
            subject=reported.sender,
            subject_device=reported.sender_device,
            category=verified.category,
            conversation_kind=verified.conversation_kind,
            conversation_id=verified.conversation_id,
            reported_message_id=reported.message_id,
            received_ms=now_ms,
            item_count=len(submission.items),
            attachment_count=len(attachments),
        )
        self.reports.store_verified_report(record, items, evidence, replay, matches)
        case_id = self.cases.attach_report(
            record,
            RoutingInput(
                category=category,
                conversation_kind=verified.conversation_kind,
                has_attachments=bool(attachments),
            ),
            now_ms=now_ms,
        )
        self.reports.update_report(replace(record, case_id=case_id))
        self.audit.append(
            actor=f"account:{submission.reporter}",
            action=AuditAction.REPORT_ACCEPTED,
            target=f"report:{report_id}",
            now_ms=now_ms,
            details={
                "case": case_id,
                "category": verified.category.value,
                "items": len(submission.items),
                "attachments": len(attachments),
                "kind": verified.conversation_kind.value,
                "matched": len(matches),
            },
        )
        if matches:
            self.audit.append(
                actor="system",
                action=AuditAction.REPORT_MATCH,
                target=f"report:{report_id}",
                now_ms=now_ms,
                details={
                    "case": case_id,
                    "routed": Category.CHILD_SEXUAL_EXPLOITATION.value,
                    "matches": [
                        {
                            "item": m.item_index,
                            "attachment": m.attachment_index,
                            "entries": [
                                {
                                    "bank": e.bank,
                                    "entry": e.entry_id,
                                    "signal": e.signal_type,
                                    "distance": e.distance,
                                }
                                for e in m.entries[:_AUDITED_ENTRIES]
                            ],
                        }
                        for m in matches
                    ],
                },
            )
        return ReportReceipt(report_id=report_id, case_id=case_id)

    def _match(
        self, report_id: str, attachments: Sequence[VerifiedAttachment], now_ms: int
    ) -> list[ReportMatch]:
        """The bank matches of the verified attachments (none without a matcher)."""
        if self.matcher is None:
            return []
        out = []
        for a in attachments:
            found = self.matcher.match_media(a.plaintext)
            if not found.entries:
                continue
            out.append(
                ReportMatch(
                    report_id=report_id,
                    item_index=a.item_index,
                    attachment_index=a.attachment_index,
                    attachment_id=a.attachment_id,
                    sha256=found.digests.sha256,
                    pdq=None if found.pdq is None else found.pdq.bits,
                    distance=found.distance,
                    entries=found.entries,
                    matched_ms=now_ms,
                )
            )
        return out
