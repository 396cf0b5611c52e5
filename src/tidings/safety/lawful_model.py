"""What a lawful request is, as frozen records, and the one table of its workflow (issue 11,
docs/operations.md "Lawful requests").

A `LawfulRequest` is a law-enforcement request for the data of one account: who asked
(agency, officer, the officer's e-mail, the country), under what (case number, legal basis
text, the request's `RequestType`), what for (the account and the data inventory's category
keys it asks for), when it arrived and when it is due. Its `RequestState` moves only along
`TRANSITIONS` (``TRANSITIONS[(state, action)] -> state``); `next_state` is the one place that
reads it. Lists (the requested and scoped categories, what scoping dropped and why, the
verification outbox) are kept as JSON text so the record is one row.

Pure: no I/O. The repositories (`LawfulRequestRepository`, in memory here, SQL in
`tidings.safety.sql.lawful`) store whole records with a version check.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Protocol

from tidings.errors import ConflictError, LawfulRequestStateError
from tidings.safety.inventory import LegalProcess

__all__ = [
    "PROCESS_RANK",
    "TRANSITIONS",
    "InMemoryLawfulRequestRepository",
    "LawfulRequest",
    "LawfulRequestRepository",
    "RequestAction",
    "RequestState",
    "RequestType",
    "StoredPackage",
    "allowed_actions",
    "by_urgency",
    "kind_permits",
    "next_state",
    "satisfies",
]


class RequestType(StrEnum):
    """The instrument the request is made under."""

    PRESERVATION = "preservation"  # 18 U.S.C. 2703(f): preserve, produce nothing
    SUBPOENA = "subpoena"
    COURT_ORDER = "court_order"
    SEARCH_WARRANT = "search_warrant"
    EMERGENCY = "emergency"  # 2702(b)(8), (c)(4): any category, on a recorded justification


class RequestState(StrEnum):
    RECEIVED = "received"
    VERIFIED = "verified"
    IN_REVIEW = "in_review"
    SCOPED = "scoped"
    REJECTED = "rejected"
    PRODUCED = "produced"
    DELIVERED = "delivered"
    CLOSED = "closed"


class RequestAction(StrEnum):
    VERIFY = "verify"
    REVIEW = "review"
    SCOPE = "scope"
    REJECT = "reject"
    PRODUCE = "produce"
    DELIVER = "deliver"
    CLOSE = "close"


S, A = RequestState, RequestAction
TRANSITIONS: Mapping[tuple[RequestState, RequestAction], RequestState] = {
    (S.RECEIVED, A.VERIFY): S.VERIFIED,
    (S.RECEIVED, A.REJECT): S.REJECTED,
    (S.VERIFIED, A.REVIEW): S.IN_REVIEW,
    (S.VERIFIED, A.REJECT): S.REJECTED,
    (S.IN_REVIEW, A.SCOPE): S.SCOPED,
    (S.IN_REVIEW, A.REJECT): S.REJECTED,
    # A preservation request produces nothing: once its hold is placed and reviewed it closes.
    (S.IN_REVIEW, A.CLOSE): S.CLOSED,
    (S.SCOPED, A.PRODUCE): S.PRODUCED,
    (S.SCOPED, A.REJECT): S.REJECTED,
    (S.PRODUCED, A.DELIVER): S.DELIVERED,
    (S.DELIVERED, A.CLOSE): S.CLOSED,
    (S.REJECTED, A.CLOSE): S.CLOSED,
}
"""The whole workflow: every allowed (state, action) and the state it leads to."""
del S, A


def next_state(state: RequestState, action: RequestAction) -> RequestState:
    """The state ``action`` leads to from ``state``. Raises `LawfulRequestStateError` when the
    table has no such transition."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise LawfulRequestStateError(
            f"a request that is {state.value} cannot be given action {action.value}"
        ) from None


def kind_permits(kind: RequestType, state: RequestState, action: RequestAction) -> bool:
    """Whether a request of ``kind`` may take ``action`` in ``state`` beyond what the table
    allows every request: a preservation request is never scoped or produced (it closes from
    review), and only a preservation request closes from review."""
    if kind is RequestType.PRESERVATION:
        return action not in (RequestAction.SCOPE, RequestAction.PRODUCE)
    return not (state is RequestState.IN_REVIEW and action is RequestAction.CLOSE)


def allowed_actions(request: LawfulRequest) -> list[RequestAction]:
    """The actions ``request`` may take next, in the table's order (what the console offers;
    the service refuses the rest)."""
    return [
        action for (state, action) in TRANSITIONS
        if state is request.state and kind_permits(request.kind, state, action)
    ]


PROCESS_RANK: Mapping[RequestType | LegalProcess, int] = {
    RequestType.PRESERVATION: 0,
    LegalProcess.SUBPOENA: 1,
    RequestType.SUBPOENA: 1,
    LegalProcess.COURT_ORDER: 2,
    RequestType.COURT_ORDER: 2,
    LegalProcess.SEARCH_WARRANT: 3,
    RequestType.SEARCH_WARRANT: 3,
}
"""subpoena < court order < search warrant; a preservation request reaches no category;
emergency is handled apart (`satisfies`)."""


def satisfies(kind: RequestType, process: LegalProcess) -> bool:
    """Whether a request of ``kind`` is enough process for a category needing ``process``
    (an emergency request reaches every category; its justification is checked apart)."""
    if kind is RequestType.EMERGENCY:
        return True
    return PROCESS_RANK[kind] >= PROCESS_RANK[process]


@dataclass(frozen=True, slots=True)
class LawfulRequest:
    """One request (module docstring). ``requested``, ``scope`` are JSON lists of category
    keys; ``dropped`` a JSON object {key: why it was not kept}; ``outbox`` a JSON list of the
    verification messages "sent" ({"to", "sent_ms", "expires_ms"}: the token itself is never
    stored, only ``token_hash``, its SHA-256 in hex). ``domain_allowed`` is whether the
    officer's e-mail domain was on the operator's allow-list at intake. ``notice_due_ms`` is
    set at delivery: when the account's user notice is due (``ndo_until_ms`` delays it).
    ``emergency_justification`` is the requester's own, given at intake (legal's, at scoping,
    is ``justification``); ``access_hash`` the SHA-256 (hex) of the portal's status-page key."""

    request_id: str
    agency: str
    officer_name: str
    officer_email: str
    country: str
    case_number: str
    legal_basis: str
    kind: RequestType
    account: str
    requested: str
    received_ms: int
    due_ms: int
    received_by: str
    domain_allowed: bool
    state: RequestState = RequestState.RECEIVED
    token_hash: str | None = None
    token_expires_ms: int | None = None
    outbox: str = "[]"
    verified_ms: int | None = None
    scope: str = "[]"
    dropped: str = "{}"
    justification: str | None = None
    reject_reason: str | None = None
    hold_id: str | None = None
    manifest_sha256: str | None = None
    produced_ms: int | None = None
    delivered_ms: int | None = None
    closed_ms: int | None = None
    ndo_until_ms: int | None = None
    ndo_reference: str | None = None
    notice_due_ms: int | None = None
    emergency_justification: str | None = None
    access_hash: str | None = None
    updated_ms: int = 0
    version: int = 1

    def __repr__(self) -> str:
        return f"LawfulRequest({self.request_id}, {self.kind.value}, {self.state.value})"

    @property
    def urgent(self) -> bool:
        """An emergency disclosure not yet finished: the staff list shows it first."""
        return self.kind is RequestType.EMERGENCY and self.state not in _FINISHED

    def requested_keys(self) -> list[str]:
        return [str(k) for k in json.loads(self.requested)]

    def scope_keys(self) -> list[str]:
        return [str(k) for k in json.loads(self.scope)]

    def to_json(self) -> dict[str, Any]:
        """Every field except the token and access hashes, lists decoded (for the CLI and the
        package)."""
        out: dict[str, Any] = {}
        for name in (f.name for f in fields(self)):
            if name in ("token_hash", "access_hash"):
                continue
            value = getattr(self, name)
            if name in ("requested", "scope", "dropped", "outbox"):
                value = json.loads(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[name] = value
        return out


_FINISHED = frozenset({RequestState.DELIVERED, RequestState.CLOSED, RequestState.REJECTED})


def by_urgency(requests: Iterable[LawfulRequest]) -> list[LawfulRequest]:
    """``requests`` in the order legal works them: open emergency disclosures first, then
    by due date (earliest first), then by arrival. The staff list's order."""
    return sorted(requests, key=lambda r: (not r.urgent, r.due_ms, r.received_ms, r.request_id))


@dataclass(frozen=True, slots=True)
class StoredPackage:
    """The provider's copy of a request's production package: the zip archive
    (`tidings.safety.lawful_package.package_zip`) exactly as it is downloaded, kept with the
    request as the record of what was disclosed. A new production replaces it."""

    request_id: str
    manifest_sha256: str
    created_ms: int
    archive: bytes

    def __repr__(self) -> str:
        return f"StoredPackage({self.request_id}, {len(self.archive)} bytes)"

    @property
    def filename(self) -> str:
        """The archive's download name."""
        return f"tidings-{self.request_id}-package.zip"


class LawfulRequestRepository(Protocol):
    def add(self, request: LawfulRequest) -> None:
        """Raises `ConflictError` when the id exists."""
        ...

    def get(self, request_id: str) -> LawfulRequest | None: ...

    def update(self, request: LawfulRequest) -> None:
        """Store ``request`` (whose ``version`` is one more than the stored one). Raises
        `ConflictError` when the stored version is not ``request.version - 1``."""
        ...

    def all(self) -> list[LawfulRequest]:
        """Every request, oldest received first."""
        ...

    def notices_due(self, now_ms: int) -> list[LawfulRequest]:
        """Requests whose ``notice_due_ms`` is at or before ``now_ms``, oldest first."""
        ...

    def for_account(self, account: str) -> list[LawfulRequest]:
        """The requests about ``account``, oldest received first."""
        ...

    def put_package(self, package: StoredPackage) -> None:
        """Store ``package`` as its request's package (replacing an earlier one)."""
        ...

    def get_package(self, request_id: str) -> StoredPackage | None: ...


class InMemoryLawfulRequestRepository:
    def __init__(self) -> None:
        self.rows: dict[str, LawfulRequest] = {}
        self.packages: dict[str, StoredPackage] = {}
        self._lock = threading.Lock()

    def add(self, request: LawfulRequest) -> None:
        with self._lock:
            if request.request_id in self.rows:
                raise ConflictError("lawful request id exists")
            self.rows[request.request_id] = request

    def get(self, request_id: str) -> LawfulRequest | None:
        return self.rows.get(request_id)

    def update(self, request: LawfulRequest) -> None:
        with self._lock:
            stored = self.rows.get(request.request_id)
            if stored is None or stored.version != request.version - 1:
                raise ConflictError("the lawful request changed; reload and retry")
            self.rows[request.request_id] = replace(request)

    def all(self) -> list[LawfulRequest]:
        return sorted(self.rows.values(), key=lambda r: (r.received_ms, r.request_id))

    def notices_due(self, now_ms: int) -> list[LawfulRequest]:
        return [r for r in self.all() if r.notice_due_ms is not None and r.notice_due_ms <= now_ms]

    def for_account(self, account: str) -> list[LawfulRequest]:
        return [r for r in self.all() if r.account == account]

    def put_package(self, package: StoredPackage) -> None:
        self.packages[package.request_id] = package

    def get_package(self, request_id: str) -> StoredPackage | None:
        return self.packages.get(request_id)

    def count_received(self, start_ms: int, end_ms: int) -> dict[tuple[str, ...], int]:
        counts: dict[tuple[str, ...], int] = {}
        for r in self.rows.values():
            if start_ms <= r.received_ms < end_ms:
                key = (r.kind.value, r.country, "no" if r.produced_ms is None else "yes",
                       "no" if r.ndo_reference is None else "yes")
                counts[key] = counts.get(key, 0) + 1
        return counts
