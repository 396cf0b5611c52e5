"""Append-only, hash-chained audit log of every staff access and decision.

Entry ``n`` (``seq`` starts at 1) is ``(seq, time_ms, actor, action, target, details, prev_hash)``
where ``details`` is canonical JSON (sorted keys, no whitespace, UTF-8, no floats) and
``prev_hash`` is the ``entry_hash`` of entry ``n - 1`` (32 zero bytes for entry 1)::

    entry_hash = SHA-256("Tidings_Audit_v1" || u64(seq) || u64(time_ms)
                         || var16(actor) || var16(action) || var16(target)
                         || var32(details) || prev_hash)

and, when the log is anchored, ``anchor = HMAC-SHA256(anchor_key, "Tidings_AuditAnchor_v1" ||
entry_hash)``. Every field is length-prefixed or fixed width, so two different entries never
share an encoding.

Threat model (who can do what, and what the verifier catches):

- *Accidental or naive tampering* — a row edited, deleted, inserted or two rows swapped by
  someone who does not recompute hashes: the chain breaks at the first affected entry.
- *A database administrator* (full read/write on the database, no access to the application's
  configuration secrets) can recompute SHA-256 hashes, so the bare chain alone does not stop
  them from rewriting history consistently. The *anchor key* is kept outside the database (the
  operator's secret store, like the franking and evidence keys), and every entry carries an
  HMAC of its hash under it: a DBA cannot produce valid anchors for edited or inserted entries.
- *Truncation of the tail* (deleting the newest entries) leaves a valid shorter chain. It is
  caught only against an external *checkpoint* (`AuditLog.checkpoint`: seq + head hash,
  exported periodically to a place the DBA cannot write, e.g. the operator's log shipping or a
  public transparency post); `verify_chain(..., checkpoint=...)` checks it.
- Not covered: someone holding both the database and the anchor key (an operator with full
  control) — mitigate by shipping checkpoints off-host.

Details must never carry evidence plaintext, keys or passwords: callers put identifiers and
categories there. `canonical_details` refuses floats (their text form is not canonical) and
non-JSON types.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol

from tidings.crypto.primitives import constant_time_equal, hmac_sha256, sha256
from tidings.errors import AuditChainError, ConflictError, InvalidKeyError, SafetyInputError
from tidings.safety.memory_rows import count_groups, in_period
from tidings.wire.binary import u64, var16, var32

__all__ = [
    "ANCHOR_LABEL",
    "AUDIT_LABEL",
    "GENESIS_HASH",
    "AuditAction",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditFault",
    "AuditLog",
    "AuditRepository",
    "AuditVerification",
    "AuditsOneKind",
    "InMemoryAuditRepository",
    "canonical_details",
    "compute_anchor",
    "compute_entry_hash",
    "verify_chain",
]

AUDIT_LABEL = b"Tidings_Audit_v1"
ANCHOR_LABEL = b"Tidings_AuditAnchor_v1"
GENESIS_HASH = bytes(32)
_MAX_FIELD = 1024
_MAX_DETAILS = 64 * 1024


class AuditAction(StrEnum):
    """What happened. Values are stable (stored)."""

    LOGIN = "staff.login"
    LOGIN_FAILED = "staff.login_failed"
    LOGOUT = "staff.logout"
    STAFF_CREATE = "staff.create"
    STAFF_ROLES = "staff.roles"
    STAFF_CHILD_SAFETY = "staff.child_safety"
    STAFF_QUEUE = "staff.queue"
    STAFF_DISABLE = "staff.disable"
    STAFF_PASSWORD = "staff.password"  # noqa: S105 - an action name, not a password
    STAFF_ENROL_ISSUE = "staff.enrol_issue"
    STAFF_ENROL_BEGIN = "staff.enrol_begin"
    STAFF_ENROL = "staff.enrol"
    STAFF_GRANT_REQUEST = "staff.grant_request"
    STAFF_GRANT_APPROVE = "staff.grant_approve"
    STAFF_GRANT_REJECT = "staff.grant_reject"
    REPORT_ACCEPTED = "report.accepted"
    REPORT_MATCH = "report.match"
    REPORTER_VOIDED = "report.reporter_voided"
    DETECTION_LIST_BUILT = "detection.list_built"
    DETECTION_RECOVERED = "detection.recovered"
    DETECTION_MATCH = "detection.match"
    DETECTION_FALSE_CANDIDATE = "detection.false_candidate"
    DETECTION_WINDOW_OVER_BOUND = "detection.window_over_bound"
    DETECTION_WINDOWS_PURGED = "detection.windows_purged"
    EVIDENCE_VIEW = "evidence.view"
    EVIDENCE_EXPORT = "evidence.export"
    EVIDENCE_REENCRYPT = "evidence.reencrypt"
    EVIDENCE_PURGE = "evidence.purge"
    EVIDENCE_HOLD = "evidence.hold"
    HOLD_PLACE = "hold.place"
    HOLD_EXTEND = "hold.extend"
    HOLD_RELEASE = "hold.release"
    HOLD_VIEW = "hold.view"
    CASE_OPEN = "case.open"
    CASE_VIEW = "case.view"
    CASE_LIST = "case.list"
    CASE_UPDATE = "case.update"
    CASE_LOCK = "case.lock"
    CASE_UNLOCK = "case.unlock"
    CASE_ASSIGN = "case.assign"
    CASE_NOTE = "case.note"
    CASE_ESCALATE = "case.escalate"
    DECISION = "case.decision"
    DECISION_CONFIRM = "case.decision_confirm"
    DECISION_REJECT = "case.decision_reject"
    APPEAL_FILED = "appeal.filed"
    APPEAL_DECIDED = "appeal.decided"
    KEY_ROTATION = "key.rotation"
    AUDIT_VERIFY = "audit.verify"
    BANK_CREATE = "bank.create"
    BANK_IMPORT = "bank.import"
    BANK_REMOVE = "bank.remove"
    BANK_VIEW = "bank.view"
    BANK_EXPORT = "bank.export"
    INVENTORY_VIEW = "inventory.view"
    TRANSPARENCY_VIEW = "transparency.view"
    REFERRAL_PREPARE = "referral.prepare"
    REFERRAL_APPROVE = "referral.approve"
    REFERRAL_SUBMIT_STEP = "referral.submit_step"
    REFERRAL_SUBMITTED = "referral.submitted"
    REFERRAL_RETRACT = "referral.retract"
    REFERRAL_REOPEN = "referral.reopen"
    REFERRAL_VIEW = "referral.view"
    REFERRAL_LIST = "referral.list"
    LAWFUL_RECEIVE = "lawful.receive"
    LAWFUL_TRANSITION = "lawful.transition"
    LAWFUL_NDO = "lawful.ndo"
    LAWFUL_VIEW = "lawful.view"
    LAWFUL_LIST = "lawful.list"
    LAWFUL_PACKAGE = "lawful.package"
    LAWFUL_RESEND = "lawful.resend"


def _check_json(value: object, depth: int = 0) -> None:
    if depth > 16:
        raise SafetyInputError("audit details nest too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SafetyInputError("audit detail keys must be strings")
            _check_json(item, depth + 1)
        return
    # Floats have no canonical text form across implementations; bytes are not JSON.
    raise SafetyInputError("audit details may hold only null, bool, int, str, lists and objects")


def canonical_details(details: Mapping[str, object] | None) -> str:
    """Canonical JSON text of ``details``: sorted keys, ``,``/``:`` separators, UTF-8 as is.

    Raises:
        SafetyInputError: a float, bytes or other non-JSON value, non-string keys, nesting
            deeper than 16, or more than 64 KiB of text.
    """
    data = dict(details or {})
    _check_json(data)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > _MAX_DETAILS:
        raise SafetyInputError("audit details are too large")
    return text


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry (a row). ``anchor`` is empty when the log is not anchored."""

    seq: int
    time_ms: int
    actor: str
    action: str
    target: str
    details: str
    prev_hash: bytes
    entry_hash: bytes
    anchor: bytes = b""

    @property
    def details_obj(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(self.details)
        return loaded


def _text(value: str, what: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > _MAX_FIELD:
        raise SafetyInputError(f"audit {what} is too long")
    return data


def compute_entry_hash(
    seq: int, time_ms: int, actor: str, action: str, target: str, details: str, prev_hash: bytes
) -> bytes:
    """The entry hash (module docstring). Raises `SafetyInputError` for over-long fields."""
    return sha256(
        b"".join(
            (
                AUDIT_LABEL,
                u64(seq),
                u64(time_ms),
                var16(_text(actor, "actor")),
                var16(_text(action, "action")),
                var16(_text(target, "target")),
                var32(details.encode("utf-8")),
                prev_hash,
            )
        )
    )


def compute_anchor(anchor_key: bytes, entry_hash: bytes) -> bytes:
    """``HMAC-SHA256(anchor_key, "Tidings_AuditAnchor_v1" || entry_hash)``."""
    return hmac_sha256(anchor_key, ANCHOR_LABEL + entry_hash)


def _entry_hash_of(entry: AuditEntry) -> bytes:
    return compute_entry_hash(
        entry.seq,
        entry.time_ms,
        entry.actor,
        entry.action,
        entry.target,
        entry.details,
        entry.prev_hash,
    )


class AuditRepository(Protocol):
    """Storage of the audit log. SQL: one table, ``seq`` the primary key, no UPDATE or DELETE
    grants for the application role (append-only at the database level too)."""

    def append(self, entry: AuditEntry) -> None:
        """Insert ``entry``. Raises `ConflictError` if ``entry.seq`` is not ``head.seq + 1``
        (a concurrent append won; the caller re-reads the head and retries)."""
        ...

    def head(self) -> AuditEntry | None:
        """The entry with the highest seq, or None for an empty log."""
        ...

    def entries(self, start_seq: int = 1) -> Iterator[AuditEntry]:
        """Entries with ``seq >= start_seq`` in seq order (``ORDER BY seq``)."""
        ...


class InMemoryAuditRepository:
    """`AuditRepository` in memory (tests, embedded demos). ``rows`` is exposed on purpose so
    tests can tamper with it the way a database administrator could."""

    def __init__(self) -> None:
        self.rows: list[AuditEntry] = []
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> None:
        with self._lock:
            expected = self.rows[-1].seq + 1 if self.rows else 1
            if entry.seq != expected:
                raise ConflictError("audit log head moved")
            self.rows.append(entry)

    def head(self) -> AuditEntry | None:
        return self.rows[-1] if self.rows else None

    def entries(self, start_seq: int = 1) -> Iterator[AuditEntry]:
        return iter([e for e in list(self.rows) if e.seq >= start_seq])

    def count_actions(
        self, start_ms: int, end_ms: int, actions: Iterable[str]
    ) -> dict[tuple[str, ...], int]:
        """Entries of each of ``actions`` with ``start_ms <= time_ms < end_ms``, keyed
        ``(action,)`` (an action without one is absent)."""
        wanted = set(actions)
        return count_groups(
            list(self.rows),
            lambda e: (e.action,) if e.action in wanted and in_period(e.time_ms, start_ms, end_ms)
            else None,
        )


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A (seq, head hash) pair to keep outside the database; see the module docstring."""

    seq: int
    entry_hash: bytes


class AuditFault(StrEnum):
    """Why `verify_chain` failed, at ``first_bad_seq``."""

    EDITED = "edited"  # the entry's fields do not hash to its stored hash
    ANCHOR_MISMATCH = "anchor_mismatch"  # hash recomputed by someone without the anchor key
    BROKEN_LINK = "broken_link"  # prev_hash is not the previous entry's hash
    REMOVED = "removed"  # a seq is missing and never appears
    REORDERED = "reordered"  # the missing seq appears later
    INSERTED = "inserted"  # a seq repeats or goes back and was not skipped earlier
    BAD_GENESIS = "bad_genesis"  # entry 1 does not start from the all-zero hash
    TRUNCATED = "truncated"  # the log ends before the checkpoint's seq
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # the checkpoint's entry hash differs


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """Result of `verify_chain`. ``ok`` is True iff ``fault`` is None."""

    checked: int
    head: AuditCheckpoint | None
    first_bad_seq: int | None = None
    fault: AuditFault | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.fault is None

    def raise_for_fault(self) -> None:
        """Raises `AuditChainError` ("<fault> at seq <n>: <detail>") when not ok."""
        if self.fault is not None:
            raise AuditChainError(f"{self.fault.value} at seq {self.first_bad_seq}: {self.detail}")


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    anchor_key: bytes | None = None,
    checkpoint: AuditCheckpoint | None = None,
) -> AuditVerification:
    """Verify a log read in storage order; report the first bad position and why.

    Checks per entry, in order: its seq is the next one (else REMOVED / REORDERED / INSERTED,
    decided by scanning the remaining seqs); its fields hash to ``entry_hash`` (EDITED); with
    ``anchor_key``, its anchor verifies (ANCHOR_MISMATCH); its ``prev_hash`` is the previous
    entry's hash (BROKEN_LINK, or BAD_GENESIS for seq 1). Then, with ``checkpoint``, the log
    reaches the checkpoint's seq (TRUNCATED) and has that hash there (CHECKPOINT_MISMATCH).

    Streaming: memory is O(1) except when a seq gap forces a scan of the remaining seqs.
    Never raises for bad data (returns a fault); use `AuditVerification.raise_for_fault`.
    """
    iterator = iter(entries)
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    head: AuditCheckpoint | None = None
    seen_checkpoint = checkpoint is None
    for entry in iterator:
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                later = any(e.seq == expected_seq for e in iterator)
                fault = AuditFault.REORDERED if later else AuditFault.REMOVED
                detail = f"found seq {entry.seq} where {expected_seq} was expected" + (
                    "; it appears later" if later else "; it is missing"
                )
                return AuditVerification(checked, head, expected_seq, fault, detail)
            return AuditVerification(
                checked,
                head,
                entry.seq,
                AuditFault.INSERTED,
                f"seq {entry.seq} appears again after seq {expected_seq - 1}",
            )
        try:
            recomputed = _entry_hash_of(entry)
        except SafetyInputError:
            recomputed = b""
        if not constant_time_equal(recomputed, entry.entry_hash):
            return AuditVerification(
                checked, head, entry.seq, AuditFault.EDITED, "fields do not match the entry hash"
            )
        if anchor_key is not None and not constant_time_equal(
            compute_anchor(anchor_key, entry.entry_hash), entry.anchor
        ):
            return AuditVerification(
                checked, head, entry.seq, AuditFault.ANCHOR_MISMATCH, "anchor does not verify"
            )
        if not constant_time_equal(entry.prev_hash, prev_hash):
            if entry.seq == 1:
                return AuditVerification(
                    checked, head, 1, AuditFault.BAD_GENESIS, "first entry has a previous hash"
                )
            return AuditVerification(
                checked,
                head,
                entry.seq,
                AuditFault.BROKEN_LINK,
                f"does not follow seq {entry.seq - 1} (that entry was rewritten or replaced)",
            )
        if checkpoint is not None and entry.seq == checkpoint.seq:
            if not constant_time_equal(entry.entry_hash, checkpoint.entry_hash):
                return AuditVerification(
                    checked,
                    head,
                    entry.seq,
                    AuditFault.CHECKPOINT_MISMATCH,
                    "entry differs from the external checkpoint",
                )
            seen_checkpoint = True
        prev_hash = entry.entry_hash
        head = AuditCheckpoint(entry.seq, entry.entry_hash)
        expected_seq += 1
        checked += 1
    if not seen_checkpoint:
        assert checkpoint is not None
        return AuditVerification(
            checked,
            head,
            expected_seq,
            AuditFault.TRUNCATED,
            f"log ends before checkpoint seq {checkpoint.seq}",
        )
    return AuditVerification(checked, head)


@dataclass(slots=True)
class AuditLog:
    """The only writer of the audit log.

    ``anchor_key`` (32 bytes, kept outside the database) is optional but recommended; when set,
    every appended entry is anchored and `verify` checks the anchors.

    Raises (on construction):
        InvalidKeyError: ``anchor_key`` is given and shorter than 32 bytes.
    """

    repository: AuditRepository
    anchor_key: bytes | None = field(default=None, repr=False)
    max_retries: int = 8

    def __post_init__(self) -> None:
        if self.anchor_key is not None and len(self.anchor_key) < 32:
            raise InvalidKeyError("audit anchor key must be at least 32 bytes")

    def append(
        self,
        *,
        actor: str,
        action: AuditAction | str,
        target: str,
        now_ms: int,
        details: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        """Append one entry and return it.

        ``actor`` is a staff id (or ``"system"``, ``"account:<name>"``), ``target`` the object
        acted on (``"case:<id>"``, ``"evidence:<id>"``, ...).

        Raises:
            SafetyInputError: bad details (see `canonical_details`) or over-long fields.
            ConflictError: the head kept moving under concurrent appends (after retries).
        """
        text = canonical_details(details)
        action_text = str(action.value if isinstance(action, AuditAction) else action)
        for _ in range(self.max_retries):
            head = self.repository.head()
            seq = head.seq + 1 if head else 1
            prev = head.entry_hash if head else GENESIS_HASH
            entry_hash = compute_entry_hash(seq, now_ms, actor, action_text, target, text, prev)
            anchor = compute_anchor(self.anchor_key, entry_hash) if self.anchor_key else b""
            entry = AuditEntry(
                seq, now_ms, actor, action_text, target, text, prev, entry_hash, anchor
            )
            try:
                self.repository.append(entry)
            except ConflictError:
                continue
            return entry
        raise ConflictError("audit log is too busy; retry")

    def checkpoint(self) -> AuditCheckpoint | None:
        """The current head as a checkpoint to export (None for an empty log)."""
        head = self.repository.head()
        return AuditCheckpoint(head.seq, head.entry_hash) if head else None

    def verify(self, checkpoint: AuditCheckpoint | None = None) -> AuditVerification:
        """`verify_chain` over the whole stored log with this log's anchor key."""
        return verify_chain(
            self.repository.entries(), anchor_key=self.anchor_key, checkpoint=checkpoint
        )


class AuditsOneKind:
    """Mixin for a service that audits what it does to one kind of object: each entry's
    target is ``"<audit_kind>:<object id>"`` (``"case:…"``, ``"staff:…"``)."""

    _audit: AuditLog
    audit_kind: ClassVar[str]

    def _audit_on(
        self,
        actor: str,
        action: AuditAction,
        object_id: str,
        now_ms: int,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Append ``action`` by ``actor`` on the object ``object_id`` (`AuditLog.append`,
        whose errors it raises)."""
        self._audit.append(
            actor=actor,
            action=action,
            target=f"{self.audit_kind}:{object_id}",
            now_ms=now_ms,
            details=details,
        )
