"""Preservation holds (issue 11, docs/operations.md "Preservation"): a hold freezes what the
provider holds about one account, for a referral (one year, 18 U.S.C. 2258A(h) as amended by
the REPORT Act) or a law-enforcement preservation request (90 days, renewable, 18 U.S.C.
2703(f)).

What a hold does, the moment it is placed:

- **Snapshot.** The account's subscriber record and devices (the data inventory's
  ``subscriber``, ``devices`` and ``public_keys`` categories) and the list of its attachments are
  copied into the hold (`SubjectRecords.snapshot`). Preservation is of the records *then in
  existence*: deleting the account afterwards — a user's right the hold does not take away —
  leaves the frozen copy in the hold.
- **Attachments.** Every attachment of the account stored then is kept at least until the hold
  ends (its expiry is extended, `SubjectRecords.preserve_attachments`), and account deletion
  leaves the files a hold names in the store (`preserved_attachments`); once no active hold names
  them any more they are deleted (`attachments_to_delete`, by the node's purge).
- **Evidence.** Evidence sealed for the account's cases is already kept past its expiry by the
  vault's own ``hold_until_ms``; a referral extends it (`tidings.safety.referrals`).

Holds override every retention deletion: nothing the purge, attachment expiry or account
deletion does touches what an active hold covers. A hold ends at ``until_ms`` or when legal
releases it; it can be extended. Placing, extending and releasing are legal's
(`Permission.MANAGE_HOLDS`) or the system's (a referral), each audited under who did it;
viewing is audited too.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from tidings.clock import DAY_MS, now_ms
from tidings.errors import NotFoundError, PermissionDeniedError, SafetyInputError
from tidings.safety.audit import AuditAction, AuditLog
from tidings.safety.staff import Permission, Principal

__all__ = [
    "MAX_HOLD_DAYS",
    "MAX_REFERENCE_CHARS",
    "PRESERVATION_REQUEST_DAYS",
    "REFERRAL_HOLD_DAYS",
    "HoldKind",
    "HoldRepository",
    "HoldService",
    "InMemoryHoldRepository",
    "InMemorySubjectRecords",
    "PreservationHold",
    "SubjectRecords",
]

REFERRAL_HOLD_DAYS = 365
"""A referral to the CyberTipline preserves for one year (18 U.S.C. 2258A(h), REPORT Act)."""
PRESERVATION_REQUEST_DAYS = 90
"""A law-enforcement preservation request: 90 days, renewable once by request (2703(f)(2))."""
MAX_HOLD_DAYS = 2 * 365
"""No single placement or extension reaches further than this."""
MAX_REFERENCE_CHARS = 200
MAX_REASON_CHARS = 1000


class HoldKind(StrEnum):
    REFERRAL = "referral"
    PRESERVATION_REQUEST = "preservation_request"


@dataclass(frozen=True, slots=True)
class PreservationHold:
    """One hold on one account. ``snapshot`` is the JSON of the records frozen at placement
    (`SubjectRecords.snapshot`); ``reference`` the NCMEC report id or the requester's case
    number."""

    hold_id: str
    account: str
    kind: HoldKind
    reference: str
    case_id: str | None
    placed_by: str
    placed_ms: int
    until_ms: int
    snapshot: str
    released_ms: int | None = None
    released_by: str | None = None
    release_reason: str | None = None
    cleared: bool = False
    """Set once what the hold kept past an account's deletion has been deleted."""

    def active(self, now: int) -> bool:
        return self.released_ms is None and now < self.until_ms

    def attachment_ids(self) -> list[str]:
        """The attachments the snapshot names."""
        data = json.loads(self.snapshot)
        return [str(a["id"]) for a in data.get("attachments", [])]


class HoldRepository(Protocol):
    def add(self, hold: PreservationHold) -> None: ...

    def get(self, hold_id: str) -> PreservationHold | None: ...

    def update(self, hold: PreservationHold) -> None: ...

    def for_account(self, account: str) -> list[PreservationHold]: ...

    def all(self) -> list[PreservationHold]: ...


class SubjectRecords(Protocol):
    """The messaging records of an account, as holds read and preserve them."""

    def snapshot(self, account: str) -> dict[str, Any]:
        """``{"account": {...} | None, "devices": [...], "attachments": [{"id", "size",
        "created_at_ms", "expires_at_ms"}]}`` — public keys and metadata only."""
        ...

    def preserve_attachments(self, ids: Sequence[str], until_ms: int) -> None:
        """Keep these attachments' records at least until ``until_ms``."""
        ...

    def existing_attachments(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` still have a record."""
        ...

    def production_rows(self, account: str) -> dict[str, list[dict[str, Any]]]:
        """For a lawful production: ``{"devices": [public keys], "one_time_prekeys": [...],
        "kem_prekeys": [...], "messages": [{"device_id", "created_at_ms", "expires_at_ms",
        "size"}]}`` — the queued envelopes' records and lengths, never their bytes."""
        ...


class InMemoryHoldRepository:
    def __init__(self) -> None:
        self.rows: dict[str, PreservationHold] = {}

    def add(self, hold: PreservationHold) -> None:
        self.rows[hold.hold_id] = hold

    def get(self, hold_id: str) -> PreservationHold | None:
        return self.rows.get(hold_id)

    def update(self, hold: PreservationHold) -> None:
        self.rows[hold.hold_id] = hold

    def for_account(self, account: str) -> list[PreservationHold]:
        return sorted((h for h in self.rows.values() if h.account == account),
                      key=lambda h: h.placed_ms)

    def all(self) -> list[PreservationHold]:
        return sorted(self.rows.values(), key=lambda h: h.placed_ms)

    def count_placed(self, start_ms: int, end_ms: int) -> dict[tuple[str, ...], int]:
        counts: dict[tuple[str, ...], int] = {}
        for h in self.rows.values():
            if start_ms <= h.placed_ms < end_ms:
                counts[(h.kind.value,)] = counts.get((h.kind.value,), 0) + 1
        return counts


class InMemorySubjectRecords:
    """`SubjectRecords` over dicts (tests)."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, dict[str, Any]] = {}
        self.production: dict[str, dict[str, list[dict[str, Any]]]] = {}
        """``production_rows`` by account (tests set it)."""

    def snapshot(self, account: str) -> dict[str, Any]:
        record = self.accounts.get(account)
        return {
            "account": None if record is None else {
                "username": account, **{k: v for k, v in record.items() if k != "devices"}
            },
            # Like the SQL reader: public keys and metadata, never the credential hash.
            "devices": [] if record is None else [
                {k: v for k, v in d.items() if k != "credential_hash"}
                for d in record.get("devices", [])
            ],
            "attachments": [dict(a, id=i) for i, a in sorted(self.attachments.items())
                            if a["account"] == account],
        }

    def preserve_attachments(self, ids: Sequence[str], until_ms: int) -> None:
        for i in ids:
            if i in self.attachments:
                a = self.attachments[i]
                a["expires_at_ms"] = max(a["expires_at_ms"], until_ms)

    def existing_attachments(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.attachments}

    def production_rows(self, account: str) -> dict[str, list[dict[str, Any]]]:
        rows = self.production.get(account, {})
        return {t: [dict(r) for r in rows.get(t, [])]
                for t in ("devices", "one_time_prekeys", "kem_prekeys", "messages")}


def _days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_HOLD_DAYS:
        raise SafetyInputError(f"a hold lasts 1 to {MAX_HOLD_DAYS} days")
    return days * DAY_MS


def _text(value: str, limit: int, what: str, *, required: bool) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if (required and not text) or len(text) > limit or not text.isprintable():
        raise SafetyInputError(f"{what} must be 1 to {limit} printable characters")
    return text


class HoldService:
    """Place, extend, release and read holds (module docstring).

    Errors: `PermissionDeniedError` without `Permission.MANAGE_HOLDS`; `NotFoundError` for an
    unknown hold; `SafetyInputError` for a duration, reference or reason out of range, or a
    change to a hold that is no longer active. A refused call changes nothing.
    """

    def __init__(
        self,
        repository: HoldRepository,
        audit: AuditLog,
        subjects: SubjectRecords,
        *,
        clock: Callable[[], int] = now_ms,
        id_source: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    ) -> None:
        self.repository = repository
        self.audit = audit
        self.subjects = subjects
        self.clock = clock
        self._ids = id_source

    @staticmethod
    def _require(actor: Principal) -> None:
        if Permission.MANAGE_HOLDS not in actor.permissions:
            raise PermissionDeniedError("preservation holds are legal's to manage")

    def place(
        self,
        actor: Principal | None,
        account: str,
        kind: HoldKind,
        *,
        days: int,
        reference: str,
        case_id: str | None = None,
    ) -> PreservationHold:
        """Freeze ``account``'s records for ``days``. ``actor`` None: the system (a
        referral); otherwise legal."""
        if actor is not None:
            self._require(actor)
        span = _days(days)
        account = _text(account, 64, "the account", required=True)
        reference = _text(reference, MAX_REFERENCE_CHARS, "the reference", required=True)
        now = self.clock()
        snapshot = self.subjects.snapshot(account)
        hold = PreservationHold(
            hold_id="hold_" + self._ids(),
            account=account,
            kind=HoldKind(kind),
            reference=reference,
            case_id=case_id,
            placed_by="system" if actor is None else actor.staff_id,
            placed_ms=now,
            until_ms=now + span,
            snapshot=json.dumps(snapshot, sort_keys=True),
        )
        ids = [str(a["id"]) for a in snapshot["attachments"]]
        self.subjects.preserve_attachments(ids, hold.until_ms)
        self.repository.add(hold)
        self.audit.append(
            actor=hold.placed_by,
            action=AuditAction.HOLD_PLACE,
            target=f"account:{account}",
            now_ms=now,
            details={"hold": hold.hold_id, "kind": hold.kind.value, "until_ms": hold.until_ms,
                     "case": case_id, "attachments": len(ids),
                     "account_found": snapshot["account"] is not None},
        )
        return hold

    def _active(self, hold_id: str) -> PreservationHold:
        hold = self.repository.get(hold_id)
        if hold is None:
            raise NotFoundError("no such hold")
        if not hold.active(self.clock()):
            raise SafetyInputError("the hold has ended or was released")
        return hold

    def extend(self, actor: Principal, hold_id: str, *, days: int) -> PreservationHold:
        """Keep an active hold until at least ``days`` from now (never shorter)."""
        self._require(actor)
        span = _days(days)
        hold = self._active(hold_id)
        now = self.clock()
        extended = replace(hold, until_ms=max(hold.until_ms, now + span))
        self.subjects.preserve_attachments(hold.attachment_ids(), extended.until_ms)
        self.repository.update(extended)
        self.audit.append(
            actor=actor.staff_id, action=AuditAction.HOLD_EXTEND, target=f"hold:{hold_id}",
            now_ms=now, details={"account": hold.account, "until_ms": extended.until_ms},
        )
        return extended

    def release(self, actor: Principal, hold_id: str, *, reason: str) -> PreservationHold:
        """End an active hold now. What it preserved is then subject to the normal retention
        again (attachments of a deleted account are deleted by the next purge)."""
        self._require(actor)
        reason = _text(reason, MAX_REASON_CHARS, "the reason", required=True)
        hold = self._active(hold_id)
        now = self.clock()
        released = replace(hold, released_ms=now, released_by=actor.staff_id,
                           release_reason=reason)
        self.repository.update(released)
        self.audit.append(
            actor=actor.staff_id, action=AuditAction.HOLD_RELEASE, target=f"hold:{hold_id}",
            now_ms=now, details={"account": hold.account, "reason": reason},
        )
        return released

    def holds(self, actor: Principal, account: str | None = None) -> list[PreservationHold]:
        """Every hold (or ``account``'s), oldest first; the view is audited."""
        self._require(actor)
        found = self.repository.all() if account is None else self.repository.for_account(account)
        self.audit.append(
            actor=actor.staff_id, action=AuditAction.HOLD_VIEW,
            target="holds" if account is None else f"account:{account}",
            now_ms=self.clock(), details={"holds": len(found)},
        )
        return found

    def active_for(self, account: str) -> list[PreservationHold]:
        """The account's active holds (for the case and account pages; not audited: no
        record content)."""
        now = self.clock()
        return [h for h in self.repository.for_account(account) if h.active(now)]

    def preserved_attachments(self, account: str) -> set[str]:
        """Attachments of ``account`` that an active hold names: account deletion leaves
        their files in the store."""
        return {i for h in self.active_for(account) for i in h.attachment_ids()}

    def ended_to_clear(self) -> list[tuple[PreservationHold, list[str]]]:
        """Ended holds not yet cleared, each with the attachments it kept past the account's
        deletion that no active hold still names: their records are gone, so nothing else
        deletes the files. The node's purge deletes them, then calls `mark_cleared`."""
        now = self.clock()
        holds = self.repository.all()
        named_active = {i for h in holds if h.active(now) for i in h.attachment_ids()}
        out = []
        for hold in holds:
            if hold.active(now) or hold.cleared:
                continue
            ids = [i for i in hold.attachment_ids() if i not in named_active]
            existing = self.subjects.existing_attachments(ids)
            out.append((hold, [i for i in ids if i not in existing]))
        return out

    def mark_cleared(self, hold_id: str) -> None:
        hold = self.repository.get(hold_id)
        if hold is not None and not hold.cleared:
            self.repository.update(replace(hold, cleared=True))
