"""Detection on the server: records, the repository contract and its in-memory twin.

The pure data side of `tidings.safety.detection` (docs/detection.md "On the server"):

- `ListRecord`: one published blinded list (version, digest, signature, threshold, counts and
  the blob id under which its bytes lie in the attachment store);
- `PendingVoucher`: a voucher accepted by ``POST /v1/detection/vouchers`` and not processed
  yet — the raw bytes, durably stored before the request is answered, deleted in the same
  transaction that stores what processing found (an `OpenedRecord`, or nothing);
- `OpenedRecord`: an opened voucher (its share and inner ciphertext), per (account, device,
  window). Below the threshold this is all the server keeps, and it is uniform;
- `DetectionMatch`: one confirmed image of a detection case: the sealed evidence record that
  holds the decrypted image, and the bank entries it matched with their distances and sources.

Storage: SQL in `tidings.safety.sql.detection` (tables in `tidings.storage.detection_schema`),
in memory here (`InMemoryDetectionRepository`), both honouring the same transaction rules.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from tidings.errors import ConflictError
from tidings.safety.bank_match import MatchedEntry
from tidings.safety.evidence import EvidenceRecord, InMemoryEvidenceRepository
from tidings.safety.memory_rows import GroupCounts, count_groups, in_period, insert_new

__all__ = [
    "DetectionMatch",
    "DetectionRepository",
    "InMemoryDetectionRepository",
    "ListRecord",
    "MatchedEntry",
    "OpenedRecord",
    "Outcome",
    "PendingVoucher",
    "WindowKey",
]


@dataclass(frozen=True, slots=True)
class ListRecord:
    """A published blinded list (a row). ``signature`` is Ed25519 over
    `tidings.wire.detection.list_statement` by the list-signing key ``signing_public``."""

    version: int
    digest: bytes
    signature: bytes
    signing_public: bytes
    threshold: int
    bank_list_version: int
    created_ms: int
    entry_count: int
    key_count: int
    size: int
    blob_id: str


@dataclass(frozen=True, slots=True)
class PendingVoucher:
    """An accepted, unprocessed voucher. ``claimed_until_ms``: a processor holds it until
    then (a crashed one's claim lapses and another node or the restarted one takes it)."""

    voucher_id: str
    account: str
    device_id: int
    window_id: bytes
    voucher: bytes = field(repr=False)
    claimed_until_ms: int = 0


class Outcome(StrEnum):
    """What became of an opened record once its window's shares recovered it."""

    MATCH = "match"  # the image is within the match distance of a listed hash: evidence
    NO_MATCH = "no_match"  # a false candidate (LSH keys matched, the image does not)
    UNAVAILABLE = "unavailable"  # the attachment is gone (expired, deleted)
    INVALID = "invalid"  # the inner payload, the ciphertext or the image does not check out


@dataclass(frozen=True, slots=True)
class WindowKey:
    """One device's voucher window: shares of one window combine, no others do."""

    account: str
    device_id: int
    window_id: bytes


@dataclass(frozen=True, slots=True)
class OpenedRecord:
    """An opened voucher. ``evaluated`` False: its window must be looked at again (a new
    record arrived). ``outcome`` stays None until the window's shares recovered it."""

    opened_id: str
    account: str
    device_id: int
    window_id: bytes
    share: bytes = field(repr=False)
    inner_ct: bytes = field(repr=False)
    evaluated: bool = False
    outcome: Outcome | None = None
    opened_day: int = 0
    """The UTC day (days since the epoch) the voucher was opened: the only time kept, so that
    a window nobody added to for `WINDOW_RETENTION_DAYS` can be deleted."""

    @property
    def window(self) -> WindowKey:
        return WindowKey(self.account, self.device_id, self.window_id)


@dataclass(frozen=True, slots=True)
class DetectionMatch:
    """One confirmed image of a detection case. ``evidence_id`` is the sealed image (an
    `EvidenceRecord` whose ``report_id`` is ``match_id``); ``server_pdq`` the server's own
    hash of it (the orientation closest to a listed hash), ``device_pdq`` the device's
    claim from the inner payload."""

    match_id: str
    case_id: str
    opened_id: str
    account: str
    device_id: int
    evidence_id: str
    attachment_id: str
    content_type: str
    message_id: bytes
    device_pdq: bytes
    server_pdq: bytes
    distance: int
    entries: tuple[MatchedEntry, ...]
    matched_ms: int


class DetectionRepository(Protocol):
    """Storage of lists, pending vouchers, opened records and matches (SQL: one table each;
    ``safety_detection_matches.opened_id`` unique, so one image is never matched twice)."""

    def add_list(self, record: ListRecord) -> None:
        """Raises `ConflictError` if the version exists (a concurrent build won)."""
        ...

    def current_list(self) -> ListRecord | None:
        """The highest version, or None."""
        ...

    def get_list(self, version: int) -> ListRecord | None: ...

    def add_pending(self, voucher: PendingVoucher) -> None: ...

    def claim_pending(self, *, now_ms: int, lease_ms: int, limit: int) -> list[PendingVoucher]:
        """Up to ``limit`` pending vouchers whose claim lapsed, now claimed until
        ``now_ms + lease_ms`` by the caller (a voucher another processor claimed meanwhile is
        not returned)."""
        ...

    def finish_pending(self, voucher_id: str, opened: OpenedRecord | None) -> bool:
        """In one transaction: delete the pending voucher and store ``opened`` (if any).
        False (and nothing stored) if the voucher was already finished elsewhere."""
        ...

    def pending_count(self) -> int: ...

    def windows_to_evaluate(self, limit: int) -> list[WindowKey]:
        """Windows with at least one record not yet evaluated."""
        ...

    def opened_for_window(self, window: WindowKey) -> list[OpenedRecord]:
        """Every opened record of ``window``, ordered by ``opened_id``."""
        ...

    def mark_evaluated(self, opened_ids: Sequence[str]) -> None: ...

    def set_outcome(self, opened_id: str, outcome: Outcome) -> None: ...

    def store_match(self, match: DetectionMatch, evidence: EvidenceRecord) -> None:
        """In one transaction: the sealed evidence, the match row and the opened record's
        outcome `Outcome.MATCH`. Raises `ConflictError` (nothing stored) if the opened record
        already has a match."""
        ...

    def matches_for_case(self, case_id: str) -> list[DetectionMatch]: ...

    def opened_count(self) -> int: ...

    def delete_idle_windows(self, before_day: int) -> int:
        """Delete the opened records of every window that was never recovered (no record has
        an outcome) and whose newest record was opened before ``before_day``; returns how many
        records went."""
        ...


class InMemoryDetectionRepository:
    """`DetectionRepository` in memory; stores evidence into the given
    `InMemoryEvidenceRepository` (the two share one "transaction")."""

    def __init__(self, evidence: InMemoryEvidenceRepository) -> None:
        self._evidence = evidence
        self.lists: dict[int, ListRecord] = {}
        self.pending: dict[str, PendingVoucher] = {}
        self.opened: dict[str, OpenedRecord] = {}
        self.matches: dict[str, DetectionMatch] = {}
        self._lock = threading.Lock()

    def add_list(self, record: ListRecord) -> None:
        with self._lock:
            if record.version in self.lists:
                raise ConflictError("list version exists")
            self.lists[record.version] = record

    def current_list(self) -> ListRecord | None:
        return self.lists[max(self.lists)] if self.lists else None

    def get_list(self, version: int) -> ListRecord | None:
        return self.lists.get(version)

    def add_pending(self, voucher: PendingVoucher) -> None:
        with self._lock:
            insert_new(self.pending, voucher.voucher_id, voucher, conflict="voucher id exists")

    def claim_pending(self, *, now_ms: int, lease_ms: int, limit: int) -> list[PendingVoucher]:
        with self._lock:
            free = [v for v in self.pending.values() if v.claimed_until_ms <= now_ms][:limit]
            claimed = [replace(v, claimed_until_ms=now_ms + lease_ms) for v in free]
            self.pending.update((v.voucher_id, v) for v in claimed)
            return claimed

    def finish_pending(self, voucher_id: str, opened: OpenedRecord | None) -> bool:
        with self._lock:
            if self.pending.pop(voucher_id, None) is None:
                return False
            if opened is not None:
                insert_new(self.opened, opened.opened_id, opened, conflict="opened id exists")
            return True

    def pending_count(self) -> int:
        return len(self.pending)

    def windows_to_evaluate(self, limit: int) -> list[WindowKey]:
        seen: dict[WindowKey, None] = {}
        for record in self.opened.values():
            if not record.evaluated:
                seen.setdefault(record.window)
        return list(seen)[:limit]

    def opened_for_window(self, window: WindowKey) -> list[OpenedRecord]:
        return sorted(
            (r for r in self.opened.values() if r.window == window), key=lambda r: r.opened_id
        )

    def mark_evaluated(self, opened_ids: Sequence[str]) -> None:
        with self._lock:
            for opened_id in opened_ids:
                record = self.opened.get(opened_id)
                if record is not None:
                    self.opened[opened_id] = replace(record, evaluated=True)

    def set_outcome(self, opened_id: str, outcome: Outcome) -> None:
        with self._lock:
            record = self.opened.get(opened_id)
            if record is not None:
                self.opened[opened_id] = replace(record, outcome=outcome)

    def store_match(self, match: DetectionMatch, evidence: EvidenceRecord) -> None:
        with self._lock:
            if any(m.opened_id == match.opened_id for m in self.matches.values()):
                raise ConflictError("this image is already matched")
            insert_new(self.matches, match.match_id, match, conflict="match id exists")
            self._evidence.add_evidence(evidence)
            record = self.opened.get(match.opened_id)
            if record is not None:
                self.opened[match.opened_id] = replace(record, outcome=Outcome.MATCH)

    def matches_for_case(self, case_id: str) -> list[DetectionMatch]:
        return sorted(
            (m for m in self.matches.values() if m.case_id == case_id),
            key=lambda m: (m.matched_ms, m.match_id),
        )

    def count_matches(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self.matches.values()),
            lambda m: () if in_period(m.matched_ms, start_ms, end_ms) else None,
        )

    def opened_count(self) -> int:
        return len(self.opened)

    def delete_idle_windows(self, before_day: int) -> int:
        with self._lock:
            windows: dict[WindowKey, list[OpenedRecord]] = {}
            for record in self.opened.values():
                windows.setdefault(record.window, []).append(record)
            gone = [
                r.opened_id
                for records in windows.values()
                if all(r.outcome is None for r in records)
                and max(r.opened_day for r in records) < before_day
                for r in records
            ]
            for opened_id in gone:
                del self.opened[opened_id]
            return len(gone)
