"""The stored side of referrals (issue 11): the `ReferralRecord` row, its repository contract,
the in-memory twin, and the JSON codec of the frozen `Referral` and `ReferralProgress`.

A record holds what was (or will be) reported to NCMEC — the `Referral` as JSON, file
metadata and hashes only, never a file's bytes (those stay sealed in the evidence vault and
are read from it at submission) — who prepared and approved it, the client's progress (the
idempotency state of `tidings.safety.cybertip_client`), NCMEC's report id, every step taken,
and the preservation hold a finished report placed. Pure data: no I/O but the in-memory dict.

SQL: `tidings.safety.sql.referrals` on ``safety_referrals`` (`tidings.storage.referral_schema`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from typing import Any, Protocol

from tidings.errors import ConflictError, InvalidReferralError
from tidings.safety.cybertip_client import (
    FileProgress,
    ReferralProgress,
    ReferralState,
    StepEvent,
)
from tidings.safety.referral_model import Referral

__all__ = [
    "Approval",
    "InMemoryReferralRepository",
    "ReferralRecord",
    "ReferralRepository",
    "decode_referral",
    "encode_referral",
    "progress_from_json",
    "progress_to_json",
    "step_to_json",
]


class Approval(StrEnum):
    """Where the second person's approval stands. Values are stable (stored)."""

    DRAFT = "draft"  # prepared, awaiting approval
    APPROVED = "approved"


@dataclass(frozen=True, slots=True)
class ReferralRecord:
    """One referral (a row). ``seq`` numbers the referrals of one case (1, 2, ... after a
    retraction; ``(case_id, seq)`` is unique, so two concurrent preparations cannot both be
    stored). ``document`` is `encode_referral` of the `Referral`; ``progress`` the client's
    `ReferralProgress` as JSON; ``steps`` a JSON list of every `StepEvent`. ``state`` and
    ``report_id`` repeat the progress's for listing. ``version`` is for optimistic
    concurrency: every change is a versioned update."""

    referral_id: str
    case_id: str
    seq: int
    account: str
    prepared_by: str
    prepared_ms: int
    document: str = field(repr=False)
    progress: str = field(repr=False)
    steps: str = field(default="[]", repr=False)
    approval: Approval = Approval.DRAFT
    approved_by: str | None = None
    approved_ms: int | None = None
    state: ReferralState = ReferralState.PENDING
    report_id: str | None = None
    file_count: int = 0
    hold_until_ms: int | None = None
    retracted_by: str | None = None
    updated_ms: int = 0
    version: int = 0

    def referral(self) -> Referral:
        return decode_referral(self.document)

    def progress_value(self) -> ReferralProgress:
        return progress_from_json(self.progress)

    def step_list(self) -> list[dict[str, Any]]:
        loaded: list[dict[str, Any]] = json.loads(self.steps)
        return loaded

    def to_json(self) -> dict[str, Any]:
        """The operator's and the console's view: everything but the document's free text
        is listed (the document itself is given by `ReferralService.view`)."""
        return {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "seq": self.seq,
            "account": self.account,
            "prepared_by": self.prepared_by,
            "prepared_ms": self.prepared_ms,
            "approval": self.approval.value,
            "approved_by": self.approved_by,
            "approved_ms": self.approved_ms,
            "state": self.state.value,
            "report_id": self.report_id,
            "files": self.file_count,
            "hold_until_ms": self.hold_until_ms,
            "retracted_by": self.retracted_by,
            "updated_ms": self.updated_ms,
            "steps": self.step_list(),
        }


class ReferralRepository(Protocol):
    """Storage of referral records (SQL: one table, unique ``(case_id, seq)``)."""

    def add_referral(self, record: ReferralRecord) -> None:
        """Insert; `ConflictError` if the id or ``(case_id, seq)`` exists."""
        ...

    def get_referral(self, referral_id: str) -> ReferralRecord | None: ...

    def update_referral(self, record: ReferralRecord, expected_version: int) -> None:
        """Store if the stored version is ``expected_version``; else `ConflictError`."""
        ...

    def referrals_for_case(self, case_id: str) -> list[ReferralRecord]:
        """The case's referrals, by ``seq``."""
        ...

    def list_referrals(self, *, limit: int, offset: int = 0) -> list[ReferralRecord]:
        """At most ``limit`` referrals, newest prepared first (then by id), skipping
        ``offset``."""
        ...


class InMemoryReferralRepository:
    """`ReferralRepository` in memory; ``rows`` is public so tests can inspect it."""

    def __init__(self) -> None:
        self.rows: dict[str, ReferralRecord] = {}
        self._lock = threading.Lock()

    def add_referral(self, record: ReferralRecord) -> None:
        with self._lock:
            taken = any(
                r.case_id == record.case_id and r.seq == record.seq for r in self.rows.values()
            )
            if record.referral_id in self.rows or taken:
                raise ConflictError("a referral of this case was prepared concurrently")
            self.rows[record.referral_id] = record

    def get_referral(self, referral_id: str) -> ReferralRecord | None:
        return self.rows.get(referral_id)

    def update_referral(self, record: ReferralRecord, expected_version: int) -> None:
        with self._lock:
            current = self.rows.get(record.referral_id)
            if current is None or current.version != expected_version:
                raise ConflictError("the referral changed concurrently")
            self.rows[record.referral_id] = record

    def referrals_for_case(self, case_id: str) -> list[ReferralRecord]:
        return sorted((r for r in self.rows.values() if r.case_id == case_id), key=lambda r: r.seq)

    def list_referrals(self, *, limit: int, offset: int = 0) -> list[ReferralRecord]:
        ordered = sorted(self.rows.values(), key=lambda r: (-r.prepared_ms, r.referral_id))
        return ordered[offset : offset + limit]


# --- JSON codec of the frozen values -----------------------------------------------------------
# The referral model is a tree of frozen dataclasses, enums, bytes, tuples and frozensets; it
# is written type-directed (bytes as hex, sets sorted) and read back by the field types, so a
# stored document is exactly the value that was approved.


def _to_json(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, frozenset):
        return sorted(_to_json(v) for v in value)  # type: ignore[type-var]
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    return value


def _from_json(kind: Any, data: object) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if data is None else _from_json(options[0], data)
    if origin is tuple:
        args = typing.get_args(kind)
        items = list(data)  # type: ignore[call-overload]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v) for v in items)
        return tuple(_from_json(a, v) for a, v in zip(args, items, strict=True))
    if origin is frozenset:
        (arg,) = typing.get_args(kind)
        return frozenset(_from_json(arg, v) for v in data)  # type: ignore[attr-defined]
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        values = dict(data)  # type: ignore[call-overload]
        return kind(**{f.name: _from_json(hints[f.name], values[f.name])
                       for f in dataclasses.fields(kind) if f.name in values})
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(data)
    if kind is bytes:
        return bytes.fromhex(str(data))
    return data


def encode_referral(referral: Referral) -> str:
    """Canonical JSON of ``referral`` (sorted keys)."""
    return json.dumps(_to_json(referral), sort_keys=True, separators=(",", ":"))


def decode_referral(text: str) -> Referral:
    """The `Referral` `encode_referral` wrote.

    Raises:
        InvalidReferralError: the text is not such a document (a damaged row).
    """
    try:
        value = _from_json(Referral, json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise InvalidReferralError("the stored referral document is damaged") from None
    assert isinstance(value, Referral)
    return value


def progress_to_json(progress: ReferralProgress) -> str:
    return json.dumps(_to_json(progress), sort_keys=True, separators=(",", ":"))


def progress_from_json(text: str) -> ReferralProgress:
    data = json.loads(text)
    files = tuple(FileProgress(**f) for f in data.pop("files", ()))
    return ReferralProgress(
        referral_id=data["referral_id"],
        state=ReferralState(data["state"]),
        report_id=data.get("report_id"),
        opened_ms=data.get("opened_ms"),
        files=files,
    )


def step_to_json(event: StepEvent) -> dict[str, Any]:
    out = _to_json(event)
    assert isinstance(out, dict)
    return {k: v for k, v in out.items() if v is not None and k != "referral_id"}


def with_step(record: ReferralRecord, events: Sequence[StepEvent]) -> str:
    """``record.steps`` with ``events`` appended (JSON)."""
    return json.dumps(
        [*record.step_list(), *(step_to_json(e) for e in events)], separators=(",", ":")
    )


def progressed(
    record: ReferralRecord, progress: ReferralProgress, event: StepEvent, now_ms: int
) -> ReferralRecord:
    """``record`` after the client reported ``progress`` and ``event`` (the next version)."""
    return replace(
        record,
        progress=progress_to_json(progress),
        steps=with_step(record, [event]),
        state=progress.state,
        report_id=progress.report_id,
        updated_ms=now_ms,
        version=record.version + 1,
    )
