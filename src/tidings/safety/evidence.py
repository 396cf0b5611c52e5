"""Verified evidence, encrypted at rest under a rotatable server evidence key, opened only with
an audit entry.

Keys: an `EvidenceKeyRing` of 32-byte AES-256-GCM keys by key id, one of them active for new
evidence. It is separate from the franking key ring (a leak of one does not touch the other)
and comes from the operator's secret store, never from the database. Rotation: add a key,
make it active, run `EvidenceVault.reencrypt` until it reports nothing left, then drop the old
key from the configuration.

Each blob is ``AES-256-GCM(key, nonce (12 random bytes), plaintext, aad)`` with::

    aad = "Tidings_Evidence_v1" || var16(evidence_id) || var16(report_id) || var16(kind)
          || var16(key_id)

so a blob moved to another record, report or kind (e.g. one report's attachment swapped into
another case) fails authentication instead of showing the wrong evidence.

Opening: `EvidenceVault.open` / `EvidenceVault.export` are the only code paths that decrypt.
Each one checks the principal's permission and queue access (child-safety clearance together
with membership), appends the audit entry *first* and decrypts only if that append succeeded —
so there is no way to open evidence without a record of it. The raw decryption helper is
private to this module.

Retention: every record has ``expires_ms``; a preservation hold (``hold_until_ms``, e.g. one
year for a referral) extends it. Expired evidence cannot be opened and is deleted by
`EvidenceVault.purge_expired`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Protocol

from tidings.clock import DAY_MS
from tidings.crypto.franking import MAX_CONTEXT_ITEMS, ReportItem
from tidings.crypto.primitives import (
    AES_GCM_NONCE_LEN,
    KEY_LEN,
    aes256_gcm_decrypt,
    aes256_gcm_encrypt,
)
from tidings.errors import (
    ConflictError,
    DecryptionError,
    EvidenceExpiredError,
    InvalidKeyError,
    NotFoundError,
    SafetyInputError,
    UnknownKeyIdError,
)
from tidings.safety.audit import AuditAction, AuditLog
from tidings.safety.categories import Queue
from tidings.safety.memory_rows import insert_new
from tidings.safety.staff import Permission, Principal
from tidings.wire import limits
from tidings.wire.binary import Reader, u16, var16, var32

__all__ = [
    "DEFAULT_EVIDENCE_RETENTION_MS",
    "EVIDENCE_AAD_LABEL",
    "EVIDENCE_KEY_LEN",
    "KIND_MESSAGES",
    "EvidenceKeyRing",
    "EvidenceRecord",
    "EvidenceRepository",
    "EvidenceVault",
    "InMemoryEvidenceRepository",
    "OpenedEvidence",
    "attachment_kind",
    "decode_items",
    "encode_items",
]

EVIDENCE_KEY_LEN = KEY_LEN
EVIDENCE_AAD_LABEL = b"Tidings_Evidence_v1"
_NONCE_LEN = AES_GCM_NONCE_LEN
KIND_MESSAGES = "messages"


def attachment_kind(item_index: int, attachment_index: int) -> str:
    """The kind of the evidence record holding one reported attachment's plaintext."""
    return f"attachment:{item_index}:{attachment_index}"


# --- evidence payload codecs ----------------------------------------------------------------


def encode_items(items: Sequence[ReportItem]) -> bytes:
    """``u16(count) || var32(item.encode())...`` — the plaintext of a "messages" record."""
    return u16(len(items)) + b"".join(var32(item.encode()) for item in items)


def decode_items(data: bytes) -> list[ReportItem]:
    """Inverse of `encode_items`. Raises `DecodeError` (or a subclass) for malformed input."""
    reader = Reader(data, "evidence items")
    count = reader.u16()
    items = [ReportItem.decode(reader.var32(limits.MAX_CONTENT_BYTES + 512)) for _ in range(count)]
    reader.finish()
    if count > MAX_CONTEXT_ITEMS:
        raise SafetyInputError("too many evidence items")
    return items


# --- keys -----------------------------------------------------------------------------------


class EvidenceKeyRing:
    """Evidence keys by id; ``active_key_id`` encrypts new evidence, all keys decrypt.

    Raises (on construction):
        InvalidKeyError: a key is not 32 bytes, or the active id is not in the ring.
    """

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        for key_id, key in keys.items():
            if not isinstance(key, bytes) or len(key) != EVIDENCE_KEY_LEN or not key_id:
                raise InvalidKeyError("evidence keys must be 32 bytes with a non-empty id")
        if active_key_id not in keys:
            raise InvalidKeyError("the active evidence key id is not in the key ring")
        self._keys = dict(keys)
        self.active_key_id = active_key_id

    def __repr__(self) -> str:
        return f"EvidenceKeyRing(ids={sorted(self._keys)}, active={self.active_key_id!r})"

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def key(self, key_id: str) -> bytes:
        """The AES-256-GCM key ``key_id``.

        Raises:
            UnknownKeyIdError: ``key_id`` is not in the ring (dropped too early).
        """
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyIdError("evidence key id is not in the key ring") from None


def _aad(evidence_id: str, report_id: str, kind: str, key_id: str) -> bytes:
    return b"".join(
        (
            EVIDENCE_AAD_LABEL,
            var16(evidence_id.encode("utf-8")),
            var16(report_id.encode("utf-8")),
            var16(kind.encode("utf-8")),
            var16(key_id.encode("utf-8")),
        )
    )


# --- records and repository -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One encrypted evidence blob (a row). ``child_safety`` is set when the report's category
    is child sexual exploitation: opening then needs the clearance whatever queue the case is
    in (defence in depth on top of the queue check)."""

    evidence_id: str
    report_id: str
    kind: str
    key_id: str
    nonce: bytes
    ciphertext: bytes = field(repr=False)
    plaintext_size: int
    child_safety: bool
    created_ms: int
    expires_ms: int
    hold_until_ms: int = 0

    @property
    def retained_until_ms(self) -> int:
        return max(self.expires_ms, self.hold_until_ms)


class EvidenceRepository(Protocol):
    """Storage of evidence rows (SQL: one table keyed by ``evidence_id``, index on
    ``report_id``, ``key_id`` and the retention columns). Insertion happens inside
    `tidings.safety.reports.ReportRepository.store_verified_report` (one transaction)."""

    def get_evidence(self, evidence_id: str) -> EvidenceRecord | None: ...

    def evidence_for_report(self, report_id: str) -> list[EvidenceRecord]: ...

    def evidence_not_under_key(self, key_id: str, limit: int) -> list[EvidenceRecord]: ...

    def replace_evidence(self, record: EvidenceRecord, expected_key_id: str) -> None:
        """Store ``record`` if the stored row still has ``expected_key_id``; else
        `ConflictError` (a concurrent re-encryption won)."""
        ...

    def set_hold(self, evidence_id: str, hold_until_ms: int) -> None: ...

    def expired_evidence(self, now_ms: int, limit: int) -> list[EvidenceRecord]:
        """Rows with ``max(expires_ms, hold_until_ms) <= now_ms``."""
        ...

    def delete_evidence(self, evidence_id: str) -> None: ...


class InMemoryEvidenceRepository:
    """`EvidenceRepository` in memory; ``rows`` is public so tests can tamper with it."""

    def __init__(self) -> None:
        self.rows: dict[str, EvidenceRecord] = {}
        self._lock = threading.Lock()

    def add_evidence(self, record: EvidenceRecord) -> None:
        with self._lock:
            insert_new(self.rows, record.evidence_id, record, conflict="evidence id exists")

    def get_evidence(self, evidence_id: str) -> EvidenceRecord | None:
        return self.rows.get(evidence_id)

    def evidence_for_report(self, report_id: str) -> list[EvidenceRecord]:
        return [r for r in self.rows.values() if r.report_id == report_id]

    def evidence_not_under_key(self, key_id: str, limit: int) -> list[EvidenceRecord]:
        return [r for r in self.rows.values() if r.key_id != key_id][:limit]

    def replace_evidence(self, record: EvidenceRecord, expected_key_id: str) -> None:
        with self._lock:
            current = self.rows.get(record.evidence_id)
            if current is None or current.key_id != expected_key_id:
                raise ConflictError("evidence changed concurrently")
            self.rows[record.evidence_id] = record

    def set_hold(self, evidence_id: str, hold_until_ms: int) -> None:
        current = self.rows.get(evidence_id)
        if current is not None:
            self.rows[evidence_id] = replace(current, hold_until_ms=hold_until_ms)

    def expired_evidence(self, now_ms: int, limit: int) -> list[EvidenceRecord]:
        return [r for r in self.rows.values() if r.retained_until_ms <= now_ms][:limit]

    def delete_evidence(self, evidence_id: str) -> None:
        self.rows.pop(evidence_id, None)


# --- the vault ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenedEvidence:
    """Decrypted evidence handed to the console. ``audit_seq`` is the entry that recorded the
    opening. The plaintext never appears in a repr."""

    evidence_id: str
    report_id: str
    kind: str
    plaintext: bytes = field(repr=False)
    audit_seq: int

    def items(self) -> list[ReportItem]:
        """The reported messages (for a "messages" record)."""
        if self.kind != KIND_MESSAGES:
            raise SafetyInputError("this evidence is not a message record")
        return decode_items(self.plaintext)


def _default_random(n: int) -> bytes:
    return os.urandom(n)


DEFAULT_EVIDENCE_RETENTION_MS = 365 * DAY_MS
"""Evidence is kept a year from capture unless a hold extends it (the data inventory states it)."""


@dataclass(eq=False, repr=False, slots=True)  # no repr: it holds the key ring
class EvidenceVault:
    """Seal, open (audited), export (audited), re-encrypt and purge evidence."""

    repository: EvidenceRepository
    keys: EvidenceKeyRing
    audit: AuditLog
    _: KW_ONLY
    retention_ms: int = DEFAULT_EVIDENCE_RETENTION_MS
    random_source: Callable[[int], bytes] = _default_random

    def seal(
        self,
        *,
        evidence_id: str,
        report_id: str,
        kind: str,
        plaintext: bytes,
        child_safety: bool,
        now_ms: int,
    ) -> EvidenceRecord:
        """Encrypt ``plaintext`` under the active key into a record (not stored: the caller
        stores it together with its report, in one transaction)."""
        key_id = self.keys.active_key_id
        nonce = self.random_source(_NONCE_LEN)
        ciphertext = aes256_gcm_encrypt(
            self.keys.key(key_id), nonce, plaintext, _aad(evidence_id, report_id, kind, key_id)
        )
        return EvidenceRecord(
            evidence_id=evidence_id,
            report_id=report_id,
            kind=kind,
            key_id=key_id,
            nonce=nonce,
            ciphertext=ciphertext,
            plaintext_size=len(plaintext),
            child_safety=child_safety,
            created_ms=now_ms,
            expires_ms=now_ms + self.retention_ms,
        )

    def _decrypt(self, record: EvidenceRecord) -> bytes:
        key = self.keys.key(record.key_id)
        aad = _aad(record.evidence_id, record.report_id, record.kind, record.key_id)
        try:
            return aes256_gcm_decrypt(key, record.nonce, record.ciphertext, aad)
        # InvalidKeyError here can only be a stored nonce of the wrong length (the ring's keys
        # are checked when it is built): a damaged record, refused like a bad tag.
        except (DecryptionError, InvalidKeyError):
            raise DecryptionError("evidence blob does not authenticate for this record") from None

    def _load(self, evidence_id: str, now_ms: int) -> EvidenceRecord:
        record = self.repository.get_evidence(evidence_id)
        if record is None:
            raise NotFoundError("no such evidence")
        if record.retained_until_ms <= now_ms:
            raise EvidenceExpiredError()
        return record

    def _check_access(
        self, principal: Principal, queue: Queue, record: EvidenceRecord, permission: Permission
    ) -> None:
        principal.require(permission)
        principal.require_queue(queue)
        if record.child_safety:
            principal.require(Permission.CHILD_SAFETY)

    def _open(
        self,
        evidence_id: str,
        *,
        principal: Principal,
        queue: Queue,
        purpose: str,
        now_ms: int,
        permission: Permission,
        action: AuditAction,
        case_id: str,
    ) -> OpenedEvidence:
        if not isinstance(purpose, str) or not purpose.strip():
            raise SafetyInputError("a purpose is required to open evidence")
        record = self._load(evidence_id, now_ms)
        self._check_access(principal, queue, record, permission)
        # Audit first: if the append fails, nothing is decrypted.
        entry = self.audit.append(
            actor=principal.staff_id,
            action=action,
            target=f"evidence:{evidence_id}",
            now_ms=now_ms,
            details={
                "report": record.report_id,
                "case": case_id,
                "kind": record.kind,
                "queue": queue.queue_id,
                "purpose": purpose[:500],
            },
        )
        return OpenedEvidence(
            evidence_id=record.evidence_id,
            report_id=record.report_id,
            kind=record.kind,
            plaintext=self._decrypt(record),
            audit_seq=entry.seq,
        )

    def open(
        self,
        evidence_id: str,
        *,
        principal: Principal,
        queue: Queue,
        case_id: str,
        purpose: str,
        now_ms: int,
    ) -> OpenedEvidence:
        """Decrypt evidence for viewing; writes an EVIDENCE_VIEW audit entry first.

        ``queue`` is the queue of the case the evidence belongs to (the caller, the case
        service, resolves it); ``purpose`` is a short free-text reason, required.

        Raises:
            NotFoundError: no such evidence.  EvidenceExpiredError: past retention.
            PermissionDeniedError: no VIEW_EVIDENCE, or not a member of the queue.
            ChildSafetyPermissionError: child-safety queue or evidence without the clearance.
            SafetyInputError: empty purpose.
            DecryptionError: the blob does not authenticate (tampered or swapped).
            UnknownKeyIdError: the record's key is no longer in the key ring.
        """
        return self._open(
            evidence_id,
            principal=principal,
            queue=queue,
            purpose=purpose,
            now_ms=now_ms,
            permission=Permission.VIEW_EVIDENCE,
            action=AuditAction.EVIDENCE_VIEW,
            case_id=case_id,
        )

    def export(
        self,
        evidence_id: str,
        *,
        principal: Principal,
        queue: Queue,
        case_id: str,
        purpose: str,
        now_ms: int,
    ) -> OpenedEvidence:
        """As `open`, for taking a copy out (referral, lawful request): needs EXPORT_EVIDENCE
        and is audited as EVIDENCE_EXPORT."""
        return self._open(
            evidence_id,
            principal=principal,
            queue=queue,
            purpose=purpose,
            now_ms=now_ms,
            permission=Permission.EXPORT_EVIDENCE,
            action=AuditAction.EVIDENCE_EXPORT,
            case_id=case_id,
        )

    def place_hold(
        self, evidence_ids: Sequence[str], *, until_ms: int, actor: str, reason: str, now_ms: int
    ) -> None:
        """Extend retention (preservation hold) of records to at least ``until_ms``; audited.
        Holds only lengthen retention, never shorten it."""
        for evidence_id in evidence_ids:
            record = self.repository.get_evidence(evidence_id)
            if record is None:
                raise NotFoundError("no such evidence")
            self.repository.set_hold(evidence_id, max(record.hold_until_ms, until_ms))
        self.audit.append(
            actor=actor,
            action=AuditAction.EVIDENCE_HOLD,
            target=f"evidence:{','.join(evidence_ids)[:900]}",
            now_ms=now_ms,
            details={"until_ms": until_ms, "reason": reason[:500]},
        )

    def reencrypt(self, *, actor: str, now_ms: int, batch: int = 100) -> int:
        """Re-encrypt up to ``batch`` records that are not under the active key; returns how
        many were done (call until 0). Audited as one EVIDENCE_REENCRYPT entry per batch.

        Raises:
            UnknownKeyIdError: a record's key was dropped from the ring too early.
            DecryptionError: a record does not authenticate (left untouched).
        """
        active = self.keys.active_key_id
        records = self.repository.evidence_not_under_key(active, batch)
        done = 0
        for record in records:
            plaintext = self._decrypt(record)
            nonce = self.random_source(_NONCE_LEN)
            ciphertext = aes256_gcm_encrypt(
                self.keys.key(active),
                nonce,
                plaintext,
                _aad(record.evidence_id, record.report_id, record.kind, active),
            )
            try:
                self.repository.replace_evidence(
                    replace(record, key_id=active, nonce=nonce, ciphertext=ciphertext),
                    record.key_id,
                )
            except ConflictError:
                continue
            done += 1
        if done:
            self.audit.append(
                actor=actor,
                action=AuditAction.EVIDENCE_REENCRYPT,
                target=f"key:{active}",
                now_ms=now_ms,
                details={"count": done},
            )
        return done

    def purge_expired(self, *, now_ms: int, batch: int = 1000) -> int:
        """Delete records past retention (and not on hold); audited; returns the count.

        The audit entry is appended first (as for opening): a deletion is never left without
        its record; if a delete then fails, the next call deletes and audits it again."""
        records = self.repository.expired_evidence(now_ms, batch)
        if records:
            self.audit.append(
                actor="system",
                action=AuditAction.EVIDENCE_PURGE,
                target="evidence:expired",
                now_ms=now_ms,
                details={"ids": [r.evidence_id for r in records][:200], "count": len(records)},
            )
        for record in records:
            self.repository.delete_evidence(record.evidence_id)
        return len(records)

    def records_for_report(self, report_id: str) -> Iterator[EvidenceRecord]:
        """Metadata of a report's evidence (no decryption, no audit needed)."""
        return iter(self.repository.evidence_for_report(report_id))
