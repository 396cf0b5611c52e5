"""Lawful requests (issue 11, docs/operations.md "Lawful requests"): intake, requester
verification, legal review, scoping against the data inventory, a signed production package,
delivery, user notice and close.

Workflow (`tidings.safety.lawful_model.TRANSITIONS`): received -> verified (the requester
presented the one-time token sent to the officer's address) -> in_review -> scoped (legal keeps
only categories the inventory lists, the node reads in full, and whose least legal process the
request's type reaches; an emergency request reaches any, on a recorded justification) or
rejected (with a reason) -> produced (the package, `tidings.safety.lawful_package`) ->
delivered -> closed. A preservation request places a 90-day ``PRESERVATION_REQUEST`` hold at
intake (`HoldService`), before the request is recorded so that it never exists without it, and
closes from review: it produces nothing.

Every step is legal's (`Permission.HANDLE_LAWFUL_REQUESTS`) and audited under who took it; a
requester's verification is audited as ``requester:<email>``. A refused call raises a typed
error (`InvalidLawfulRequestError`, `LawfulRequestStateError`, `LawfulVerificationError`,
`LawfulConfigError`, `PermissionDeniedError`, `NotFoundError`) and changes nothing.

Verification token: 32 random bytes, base64url, mailed to the officer as a one-time link into
the portal (`verification_link`, through the node's mailer, `tidings.safety.mailer`), returned
once to the caller and recorded as an outbox entry (to, when, expiry) — only its SHA-256 is
stored. A token can be re-issued while the request is unverified (`resend_verification`).
The officer's e-mail domain is checked against the operator's allow-list
(``allowed_domains``): a request from another domain is flagged ``domain_allowed = False``
and can be verified only when legal
accepts the domain explicitly (audited).

User notice: at delivery the account's notice is due at once, or at the end date of a
non-disclosure order recorded before (`record_ndo`); `due_notices(now)` lists those due.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any, NotRequired, TypedDict, Unpack

from tidings.clock import DAY_MS, now_ms
from tidings.crypto.primitives import constant_time_equal, sha256
from tidings.errors import (
    InvalidLawfulRequestError,
    LawfulConfigError,
    LawfulVerificationError,
    NotFoundError,
    PermissionDeniedError,
)
from tidings.safety.audit import AuditAction, AuditLog
from tidings.safety.case_model import EnforcementRepository
from tidings.safety.holds import PRESERVATION_REQUEST_DAYS, HoldKind, HoldService, SubjectRecords
from tidings.safety.inventory import NEVER_HELD, DataCategory
from tidings.safety.lawful_model import (
    LawfulRequest,
    LawfulRequestRepository,
    RequestAction,
    RequestState,
    RequestType,
    StoredPackage,
    kind_permits,
    next_state,
    satisfies,
)
from tidings.safety.lawful_package import Package, build_package, package_zip
from tidings.safety.lawful_sources import PRODUCED_TABLES, ProductionSources
from tidings.safety.mailer import (
    DEFAULT_FROM,
    DEFAULT_PORTAL_URL,
    LawfulSettings,
    Mailer,
    OutgoingMail,
)
from tidings.safety.staff import Permission, Principal

__all__ = [
    "EMERGENCY_DUE_MS",
    "PORTAL",
    "READ_TABLES",
    "TOKEN_TTL_MS",
    "Intake",
    "IntakeFields",
    "LawfulRequestService",
    "PortalAccess",
    "UserNotice",
]

TOKEN_TTL_MS = 7 * DAY_MS
"""How long a verification token may be presented."""
EMERGENCY_DUE_MS = DAY_MS
"""An emergency disclosure is due this soon after intake unless the requester says sooner."""
PORTAL = "portal"
"""``received_by`` of a request filed through the public portal (no staff member took it)."""
MAX_SHORT = 200
MAX_TEXT = 5000
MAX_DUE_MS = 365 * DAY_MS
_COUNTRY = re.compile(r"[A-Z]{2}")
_EMAIL = re.compile(r"[^@\s]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)")
_KEY = re.compile(r"[a-z_]{1,40}")

READ_TABLES = ("accounts", "devices", "attachments", "safety_holds", "account_enforcements")
"""The tables a production reads itself; with `LawfulRequestService.sources` set (the
composition root does) it reads every table of the inventory (`PRODUCED_TABLES`). A category
with a table not read is dropped at scoping ("not readable on this node"), so a package never
silently lacks part of a category."""


class IntakeFields(TypedDict):
    """What a request is taken in with, by legal (`LawfulRequestService.receive`) or from the
    portal (`LawfulRequestService.submit`): the same fields, checked by the same rules
    (`submit`'s docstring). ``due_ms`` and ``emergency_justification`` may be left out."""

    agency: str
    officer_name: str
    officer_email: str
    country: str
    case_number: str
    legal_basis: str
    kind: RequestType | str
    account: str
    scope: Sequence[str]
    due_ms: NotRequired[int | None]
    emergency_justification: NotRequired[str | None]


@dataclass(frozen=True, slots=True)
class Intake:
    """A received request and its verification token (to deliver to the officer once; it is
    not stored)."""

    request: LawfulRequest
    token: str

    def __repr__(self) -> str:
        return f"Intake({self.request!r})"


@dataclass(frozen=True, slots=True)
class PortalAccess:
    """A request verified through the portal and its status page's access key (shown to
    the requester once; only its hash is stored)."""

    request: LawfulRequest
    key: str

    def __repr__(self) -> str:
        return f"PortalAccess({self.request!r})"


@dataclass(frozen=True, slots=True)
class UserNotice:
    """A notice the account's user must be shown: data was produced for a lawful request
    (what the user is told: who asked, from where, under what type, which categories)."""

    request_id: str
    account: str
    due_ms: int
    kind: RequestType
    agency: str = ""
    country: str = ""
    categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, request: LawfulRequest) -> UserNotice:
        return cls(request.request_id, request.account, request.notice_due_ms or 0,
                   request.kind, request.agency, request.country,
                   tuple(request.scope_keys()))

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "account": self.account, "due_ms": self.due_ms,
                "kind": self.kind.value, "agency": self.agency, "country": self.country,
                "categories": list(self.categories)}


def _text(value: object, limit: int, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > limit or not text.replace("\n", " ").isprintable():
        raise InvalidLawfulRequestError(f"{what} must be 1 to {limit} printable characters")
    return text


def _hash(token: str) -> str:
    return sha256(token.encode("utf-8")).hex()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return value


def _fields(category: DataCategory, table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Only the columns of ``row`` that ``category`` lists for ``table``."""
    if f"{table}.*" in category.fields:
        return {k: _jsonable(v) for k, v in row.items()}
    return {k: _jsonable(v) for k, v in row.items() if f"{table}.{k}" in category.fields}


class LawfulRequestService:
    """See the module docstring. ``categories`` returns the data inventory (with the node's
    retention); ``allowed_domains`` and ``signing_key`` are set by the composition root."""

    def __init__(
        self,
        repository: LawfulRequestRepository,
        audit: AuditLog,
        holds: HoldService,
        subjects: SubjectRecords,
        enforcements: EnforcementRepository,
        categories: Callable[[], Sequence[DataCategory]],
        *,
        clock: Callable[[], int] = now_ms,
        id_source: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    ) -> None:
        self.repository = repository
        self.audit = audit
        self.holds = holds
        self.subjects = subjects
        self.enforcements = enforcements
        self.categories = categories
        self.clock = clock
        self._ids = id_source
        self.allowed_domains: frozenset[str] = frozenset()
        """Lower-case official e-mail domains of requesters (the operator's allow-list)."""
        self.mailer: Mailer | None = None
        """Where verification links go (`tidings.safety.mailer`); None: not mailed (the
        token is only returned, for legal to pass on)."""
        self.mail_from = DEFAULT_FROM
        self.portal_url = DEFAULT_PORTAL_URL
        self.signing_key: bytes | None = None
        """The Ed25519 seed packages are signed with (``lawful_signing.key``)."""
        self.sources: ProductionSources | None = None
        """The rest of what a production reads (`tidings.safety.lawful_sources`), set by
        `tidings.safety.service.SafetyService`."""

    def configure(self, settings: LawfulSettings) -> None:
        """Take the node's `LawfulSettings` (allow-list, sender, portal URL, mailer)."""
        self.allowed_domains = settings.allowed_domains
        self.mail_from = settings.sender
        self.portal_url = settings.portal_url
        self.mailer = settings.mailer

    # --- helpers ------------------------------------------------------------------------

    def verification_link(self, request_id: str, token: str) -> str:
        """The one-time link the officer opens (the portal's verify page)."""
        return f"{self.portal_url}/verify/{request_id}?token={token}"

    def _mail_token(self, request: LawfulRequest, token: str) -> None:
        """Send the verification link to the officer (when a mailer is set). Raises
        `MailDeliveryError`."""
        if self.mailer is None:
            return
        body = (
            f"A lawful request to Tidings was filed in your name: {request.kind.value} from "
            f"{request.agency} ({request.country}), case {request.case_number}, request "
            f"{request.request_id}.\n\n"
            "To confirm that you made it, open this link (valid for "
            f"{TOKEN_TTL_MS // DAY_MS} days, once):\n\n"
            f"{self.verification_link(request.request_id, token)}\n\n"
            "If you did not file this request, ignore this message: nothing is produced for "
            "a request that is not confirmed.\n"
        )
        self.mailer.send(OutgoingMail(
            self.mail_from, request.officer_email,
            f"Confirm lawful request {request.request_id}", body))

    @staticmethod
    def _require(actor: Principal) -> None:
        if Permission.HANDLE_LAWFUL_REQUESTS not in actor.permissions:
            raise PermissionDeniedError("lawful requests are legal's to handle")

    def _load(self, request_id: str) -> LawfulRequest:
        found = self.repository.get(request_id)
        if found is None:
            raise NotFoundError("no such lawful request")
        return found

    def _apply(
        self, actor: str, request: LawfulRequest, action: RequestAction,
        details: dict[str, object] | None = None, **changes: Any
    ) -> LawfulRequest:
        """Move ``request`` by ``action`` (the table decides), store it, audit it."""
        state = next_state(request.state, action)
        now = self.clock()
        moved = replace(request, state=state, updated_ms=now, version=request.version + 1,
                        **changes)
        self.repository.update(moved)
        self.audit.append(
            actor=actor, action=AuditAction.LAWFUL_TRANSITION,
            target=f"lawful:{request.request_id}", now_ms=now,
            details={"action": action.value, "from": request.state.value, "to": state.value,
                     **(details or {})},
        )
        return moved

    def _domain_allowed(self, email: str) -> bool:
        return email.rpartition("@")[2].lower() in self.allowed_domains

    # --- intake and verification ----------------------------------------------------------

    def receive(
        self,
        actor: Principal,
        **fields: Unpack[IntakeFields],
    ) -> Intake:
        """Record a request taken in by legal, issue its verification token (an outbox entry
        to ``officer_email``) and, for a preservation request, place its 90-day hold — before
        the request is recorded, so it never exists without it (if placing raises, nothing
        of the request is stored; take it in again).

        Raises: `PermissionDeniedError`; `InvalidLawfulRequestError` for a field out of range
        (`submit`'s rules)."""
        self._require(actor)
        return self._intake(actor, fields)

    def submit(
        self,
        **fields: Unpack[IntakeFields],
    ) -> Intake:
        """Record a request the requester filed through the public portal
        (``received_by = "portal"``, audited as ``requester:<email>``); otherwise as `receive`
        (a preservation request's hold is placed by "system"). Nothing staff-only happens
        here: a domain off the allow-list is only flagged (legal alone may accept it).

        Raises: `InvalidLawfulRequestError` for a field out of range: a type not of
        `RequestType`, a country not ISO 3166-1 alpha-2, an e-mail not name@domain, a due
        date in the past or more than a year away (an emergency request's defaults to
        `EMERGENCY_DUE_MS` from now; any other needs one), an empty or malformed scope (a
        preservation request needs none), an emergency request without a justification."""
        return self._intake(None, fields)

    def _intake(self, staff: Principal | None, fields: IntakeFields) -> Intake:
        """The one intake path of `receive` (``staff`` legal) and `submit` (``staff`` None):
        validate every field (`submit`'s rules) before anything is stored."""
        now = self.clock()
        kind, scope = fields["kind"], fields["scope"]
        officer_email, country = fields["officer_email"], fields["country"]
        due_ms = fields.get("due_ms")
        try:
            request_type = RequestType(kind)
        except ValueError:
            raise InvalidLawfulRequestError("unknown request type") from None
        email = _text(officer_email, 320, "the officer's e-mail")
        if not _EMAIL.fullmatch(email):
            raise InvalidLawfulRequestError("the officer's e-mail is not name@domain")
        country_code = _text(country, 2, "the country").upper()
        if not _COUNTRY.fullmatch(country_code):
            raise InvalidLawfulRequestError("the country is an ISO 3166-1 alpha-2 code")
        keys = list(dict.fromkeys(scope)) if not isinstance(scope, str) else []
        if not all(isinstance(k, str) and _KEY.fullmatch(k) for k in keys) or (
            not keys and request_type is not RequestType.PRESERVATION
        ):
            raise InvalidLawfulRequestError("the scope is a list of inventory category keys")
        emergency = request_type is RequestType.EMERGENCY
        if due_ms is None and emergency:
            due_ms = now + EMERGENCY_DUE_MS
        if isinstance(due_ms, bool) or not isinstance(due_ms, int) or not (
            now < due_ms <= now + MAX_DUE_MS
        ):
            raise InvalidLawfulRequestError("the due date is within the next year")
        why = (
            _text(fields.get("emergency_justification"), MAX_TEXT,
                  "an emergency request's justification (the imminent risk)")
            if emergency else None
        )
        token = secrets.token_urlsafe(32)
        expires = now + TOKEN_TTL_MS
        request = LawfulRequest(
            request_id="lr_" + self._ids(),
            agency=_text(fields["agency"], MAX_SHORT, "the agency"),
            officer_name=_text(fields["officer_name"], MAX_SHORT, "the officer's name"),
            officer_email=email,
            country=country_code,
            case_number=_text(fields["case_number"], MAX_SHORT, "the case number"),
            legal_basis=_text(fields["legal_basis"], MAX_TEXT, "the legal basis"),
            kind=request_type,
            account=_text(fields["account"], 64, "the account"),
            requested=json.dumps(keys),
            received_ms=now,
            due_ms=due_ms,
            received_by=PORTAL if staff is None else staff.staff_id,
            domain_allowed=self._domain_allowed(email),
            token_hash=_hash(token),
            token_expires_ms=expires,
            outbox=json.dumps([{"to": email, "sent_ms": now, "expires_ms": expires}]),
            emergency_justification=why,
            updated_ms=now,
        )
        # The link first: a request whose officer cannot be reached is not recorded (the
        # error says so and the requester files again); a mail that went out for a request
        # whose recording then failed leads to "no such request".
        self._mail_token(request, token)
        if request_type is RequestType.PRESERVATION and staff is not None:
            # The hold first, the request (naming it) after: a preservation request is never
            # recorded without its hold. (One from the portal is placed once the requester
            # has verified, in `_verify`: an unverified stranger cannot freeze an account.)
            # A failed placement records nothing and raises, so legal takes the request in
            # again; a failed add after it leaves a hold that
            # names the agency and case (audited), which over-preserves but loses nothing.
            hold = self.holds.place(
                staff, request.account, HoldKind.PRESERVATION_REQUEST,
                days=PRESERVATION_REQUEST_DAYS,
                reference=f"{request.agency} {request.case_number}"[:200],
            )
            request = replace(request, hold_id=hold.hold_id)
        self.repository.add(request)
        details: dict[str, object] = {
            "kind": request_type.value, "account": request.account, "country": country_code,
            "scope": keys, "domain_allowed": request.domain_allowed,
            "received_by": request.received_by, "hold": request.hold_id,
        }
        if why is not None:
            details["emergency_justification"] = why
        self.audit.append(
            actor=f"requester:{email}" if staff is None else staff.staff_id,
            action=AuditAction.LAWFUL_RECEIVE, target=f"lawful:{request.request_id}",
            now_ms=now, details=details,
        )
        return Intake(request=request, token=token)

    def verify(
        self,
        request_id: str,
        token: str,
        *,
        actor: Principal | None = None,
        accept_unlisted_domain: bool = False,
    ) -> LawfulRequest:
        """The requester presents the token (``actor`` None: audited as
        ``requester:<email>``; or legal enters it for them). A domain not on the allow-list
        needs ``accept_unlisted_domain`` from legal. The portal uses `confirm`.

        Raises: `NotFoundError`; `LawfulRequestStateError` when not received;
        `LawfulVerificationError` for a wrong, used or expired token, or an unlisted domain
        not accepted; `PermissionDeniedError` for a staff actor without the permission."""
        if actor is not None:
            self._require(actor)
        return self._verify(request_id, token, actor, accept_unlisted_domain)

    def resend_verification(self, actor: Principal, request_id: str) -> Intake:
        """Issue a new verification token for a request not yet verified (the old one stops
        working), mail it and record it in the outbox; legal's, audited.

        Raises: `LawfulRequestStateError` once verified; `MailDeliveryError` (nothing
        changed)."""
        self._require(actor)
        request = self._load(request_id)
        next_state(request.state, RequestAction.VERIFY)
        now = self.clock()
        token = secrets.token_urlsafe(32)
        expires = now + TOKEN_TTL_MS
        self._mail_token(request, token)
        outbox = [*json.loads(request.outbox),
                  {"to": request.officer_email, "sent_ms": now, "expires_ms": expires}]
        moved = replace(request, token_hash=_hash(token), token_expires_ms=expires,
                        outbox=json.dumps(outbox), updated_ms=now, version=request.version + 1)
        self.repository.update(moved)
        self.audit.append(actor=actor.staff_id, action=AuditAction.LAWFUL_RESEND,
                          target=f"lawful:{request_id}", now_ms=now,
                          details={"to": request.officer_email})
        return Intake(request=moved, token=token)

    def confirm(self, request_id: str, token: str) -> PortalAccess:
        """The requester's verification through the portal (`verify` with no actor) that
        also issues the status page's access key: 32 random bytes, base64url, returned once;
        only its SHA-256 is stored (``access_hash``, in the same update).

        Raises: as `verify`."""
        key = secrets.token_urlsafe(32)
        request = self._verify(request_id, token, None, False, access_hash=_hash(key))
        return PortalAccess(request=request, key=key)

    def _verify(
        self, request_id: str, token: str, actor: Principal | None, accept_unlisted: bool,
        **changes: Any,
    ) -> LawfulRequest:
        request = self._load(request_id)
        next_state(request.state, RequestAction.VERIFY)
        now = self.clock()
        if (
            request.token_hash is None
            or not isinstance(token, str)
            or not constant_time_equal(request.token_hash.encode(), _hash(token).encode())
            or (request.token_expires_ms or 0) <= now
        ):
            raise LawfulVerificationError("the verification token is wrong, used or expired")
        if not request.domain_allowed and not (actor is not None and accept_unlisted):
            raise LawfulVerificationError(
                "unverified domain: the officer's e-mail domain is not on the allow-list"
            )
        who = actor.staff_id if actor is not None else f"requester:{request.officer_email}"
        if request.kind is RequestType.PRESERVATION and request.hold_id is None:
            # A portal request's hold, now that its requester is verified (the hold first,
            # as at intake: the request is never verified without it).
            hold = self.holds.place(
                actor, request.account, HoldKind.PRESERVATION_REQUEST,
                days=PRESERVATION_REQUEST_DAYS,
                reference=f"{request.agency} {request.case_number}"[:200],
            )
            changes["hold_id"] = hold.hold_id
        return self._apply(who, request, RequestAction.VERIFY,
                           {"domain_allowed": request.domain_allowed,
                            "unlisted_domain_accepted": not request.domain_allowed},
                           token_hash=None, token_expires_ms=None, verified_ms=now, **changes)

    def status(self, request_id: str, key: str) -> LawfulRequest:
        """The request for its requester's status page, given the access key `confirm`
        issued (compared in constant time); the view is audited as ``requester:<email>``.

        Raises: `NotFoundError` alike for an unknown request, a wrong key and a request
        that has none (no oracle for which ids exist)."""
        request = self.repository.get(request_id)
        presented = _hash(key).encode() if isinstance(key, str) else b""
        stored = (request.access_hash or "").encode() if request is not None else b""
        if request is None or not stored or not constant_time_equal(stored, presented):
            raise NotFoundError("no such lawful request, or the access key is wrong")
        self.audit.append(actor=f"requester:{request.officer_email}",
                          action=AuditAction.LAWFUL_VIEW, target=f"lawful:{request_id}",
                          now_ms=self.clock(), details={"via": PORTAL})
        return request

    # --- legal review ---------------------------------------------------------------------

    def review(self, actor: Principal, request_id: str) -> LawfulRequest:
        """Start legal review of a verified request."""
        self._require(actor)
        return self._apply(actor.staff_id, self._load(request_id), RequestAction.REVIEW)

    def plan_scope(
        self, request: LawfulRequest, categories: Sequence[str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """(kept, {dropped key: why}) for ``request``: of what it asked (narrowed further to
        ``categories`` when given), keep what the inventory lists, the node reads in full and the
        request's process reaches. Pure; nothing is stored."""
        inventory = {c.key: c for c in self.categories()}
        kept: list[str] = []
        dropped: dict[str, str] = {}
        for key in request.requested_keys():
            category = inventory.get(key)
            # The reasons a category cannot be had come first: "narrowed by legal" is only
            # for what the request could have had.
            if category is None:
                dropped[key] = "not in the data inventory: the provider does not hold it"
            elif not set(category.tables) <= self.read_tables():
                dropped[key] = "not readable on this node"
            elif not satisfies(request.kind, category.process):
                dropped[key] = f"needs a {category.process.value}; this is a {request.kind.value}"
            elif categories is not None and key not in categories:
                dropped[key] = "narrowed by legal"
            else:
                kept.append(key)
        return kept, dropped

    def scope(
        self,
        actor: Principal,
        request_id: str,
        *,
        categories: Sequence[str] | None = None,
        justification: str | None = None,
    ) -> LawfulRequest:
        """Narrow the request to what it may have (`plan_scope`), recording what was dropped.

        Raises: `InvalidLawfulRequestError` when nothing is left (reject the request instead),
        or for an emergency request without a justification; `LawfulRequestStateError`
        unless in review."""
        self._require(actor)
        request = self._load(request_id)
        next_state(request.state, RequestAction.SCOPE)
        if not kind_permits(request.kind, request.state, RequestAction.SCOPE):
            raise InvalidLawfulRequestError(
                "a preservation request produces nothing: close it once reviewed")
        why = None
        if request.kind is RequestType.EMERGENCY:
            why = _text(justification, MAX_TEXT, "an emergency disclosure's justification")
        kept, dropped = self.plan_scope(request, categories)
        if not kept:
            raise InvalidLawfulRequestError(
                "nothing the request asks for can be produced: reject it with the reasons"
            )
        return self._apply(actor.staff_id, request, RequestAction.SCOPE,
                           {"scope": kept, "dropped": dropped},
                           scope=json.dumps(kept), dropped=json.dumps(dropped, sort_keys=True),
                           justification=why)

    def reject(self, actor: Principal, request_id: str, *, reason: str) -> LawfulRequest:
        """Refuse the request, with the reason given to the requester."""
        self._require(actor)
        request = self._load(request_id)
        next_state(request.state, RequestAction.REJECT)
        text = _text(reason, MAX_TEXT, "the reason")
        return self._apply(actor.staff_id, request, RequestAction.REJECT, {"reason": text},
                           reject_reason=text)

    def record_ndo(
        self, actor: Principal, request_id: str, *, until_ms: int, reference: str
    ) -> LawfulRequest:
        """Record a non-disclosure order: the user notice waits until ``until_ms``. Allowed
        before delivery only (a notice already due is not withdrawn).

        Raises: `InvalidLawfulRequestError` for an end date not in the future or a missing
        reference, or once delivered or closed."""
        self._require(actor)
        request = self._load(request_id)
        now = self.clock()
        if request.state in (RequestState.DELIVERED, RequestState.CLOSED):
            raise InvalidLawfulRequestError("a non-disclosure order is recorded before delivery")
        if isinstance(until_ms, bool) or not isinstance(until_ms, int) or until_ms <= now:
            raise InvalidLawfulRequestError("a non-disclosure order ends in the future")
        ref = _text(reference, MAX_SHORT, "the order's reference")
        recorded = replace(request, ndo_until_ms=until_ms, ndo_reference=ref, updated_ms=now,
                           version=request.version + 1)
        self.repository.update(recorded)
        self.audit.append(
            actor=actor.staff_id, action=AuditAction.LAWFUL_NDO,
            target=f"lawful:{request_id}", now_ms=now,
            details={"until_ms": until_ms, "reference": ref},
        )
        return recorded

    # --- production and delivery ----------------------------------------------------------

    def read_tables(self) -> set[str]:
        """The tables a production reads (`READ_TABLES`, and `PRODUCED_TABLES` with
        ``sources``)."""
        return set(READ_TABLES) | (set(PRODUCED_TABLES) if self.sources is not None else set())

    def _sources(self, account: str) -> dict[str, list[dict[str, Any]]]:
        snapshot = self.subjects.snapshot(account)
        holds = self.holds.repository.for_account(account)
        extra = {} if self.sources is None else self.sources.read(account)
        # One row per device: the device's metadata and its public keys merged.
        keys = {d["device_id"]: d for d in extra.pop("devices", [])}
        return {
            **extra,
            "accounts": [] if snapshot["account"] is None else [dict(snapshot["account"])],
            "devices": [{**dict(d), **keys.get(d["device_id"], {})} for d in snapshot["devices"]],
            "attachments": [dict(a) for a in snapshot["attachments"]],
            "safety_holds": [asdict(h) for h in holds],
            "account_enforcements": [asdict(e)
                                     for e in self.enforcements.enforcements_for_account(account)],
        }

    def production(self, request: LawfulRequest) -> dict[str, Any]:
        """The content of ``production.json``: the request and, per scoped category, only
        the fields the inventory lists for it (never content, private keys, envelope or
        evidence bytes, or credential hashes: none is listed or read)."""
        inventory = {c.key: c for c in self.categories()}
        sources = self._sources(request.account)
        out: list[dict[str, Any]] = []
        for key in request.scope_keys():
            category = inventory[key]
            records = [
                {"table": table, **_fields(category, table, row)}
                for table in category.tables
                # A shared table's rows of this category, when they are keyed apart.
                for row in sources.get(f"{table}:{key}", sources.get(table, []))
            ]
            out.append({
                "key": key, "title": category.title, "process": category.process.value,
                "records": records,
            })
        described = {k: v for k, v in request.to_json().items()
                     if k not in ("outbox", "ndo_reference")}
        return {
            "request": described,
            "categories": out,
            "never_produced": [f"{n.what}: {n.why}" for n in NEVER_HELD],
        }

    def produce(self, actor: Principal, request_id: str) -> tuple[LawfulRequest, Package]:
        """Build and sign the package of a scoped request and keep it (its zip archive, for
        `package` and `portal_package`; write the files with
        `tidings.safety.lawful_package.write_package`); the manifest's hash is recorded.

        Raises: `LawfulConfigError` without a signing key; `LawfulRequestStateError` unless
        scoped."""
        self._require(actor)
        request = self._load(request_id)
        next_state(request.state, RequestAction.PRODUCE)
        if self.signing_key is None:
            raise LawfulConfigError("no package signing key is configured")
        now = self.clock()
        package = build_package(self.production(request), signing_key=self.signing_key,
                                created_ms=now)
        # The copy first, the state after: a produced request always has its package (a
        # failed transition leaves a package that the next production replaces).
        self.repository.put_package(StoredPackage(
            request.request_id, package.manifest_sha256, now, package_zip(package)))
        moved = self._apply(actor.staff_id, request, RequestAction.PRODUCE,
                            {"manifest_sha256": package.manifest_sha256},
                            manifest_sha256=package.manifest_sha256, produced_ms=now)
        return moved, package

    def package(self, actor: Principal, request_id: str) -> StoredPackage:
        """The request's package archive, for legal to download and deliver (audited).

        Raises: `NotFoundError` for an unknown request or one not produced."""
        self._require(actor)
        request = self._load(request_id)
        stored = self.repository.get_package(request_id)
        if stored is None or stored.manifest_sha256 != request.manifest_sha256:
            raise NotFoundError("this request has no package: produce it first")
        self.audit.append(actor=actor.staff_id, action=AuditAction.LAWFUL_PACKAGE,
                          target=f"lawful:{request_id}", now_ms=self.clock(),
                          details={"manifest_sha256": stored.manifest_sha256})
        return stored

    def portal_package(self, request_id: str, key: str) -> StoredPackage:
        """The package for its requester, through the portal with the status page's access
        key, once legal has delivered it (audited as ``requester:<email>``).

        Raises: `NotFoundError` as `status` does, and for a request not delivered (the same
        answer whether it was never produced or not yet released)."""
        request = self.status(request_id, key)
        stored = self.repository.get_package(request_id)
        if (
            request.delivered_ms is None or stored is None
            or stored.manifest_sha256 != request.manifest_sha256
        ):
            raise NotFoundError("no package has been delivered for this request")
        self.audit.append(actor=f"requester:{request.officer_email}",
                          action=AuditAction.LAWFUL_PACKAGE, target=f"lawful:{request_id}",
                          now_ms=self.clock(),
                          details={"via": PORTAL, "manifest_sha256": stored.manifest_sha256})
        return stored

    def deliver(self, actor: Principal, request_id: str) -> LawfulRequest:
        """Record the package delivered; the user notice is due now, or when a recorded
        non-disclosure order ends."""
        self._require(actor)
        request = self._load(request_id)
        now = self.clock()
        due = max(now, request.ndo_until_ms or now)
        return self._apply(actor.staff_id, request, RequestAction.DELIVER,
                           {"notice_due_ms": due}, delivered_ms=now, notice_due_ms=due)

    def close(self, actor: Principal, request_id: str) -> LawfulRequest:
        """Close a delivered or rejected request, or a preservation request in review.

        Raises: `LawfulRequestStateError` for another request in review (scope or reject
        it)."""
        self._require(actor)
        request = self._load(request_id)
        if not kind_permits(request.kind, request.state, RequestAction.CLOSE):
            raise InvalidLawfulRequestError("only a preservation request closes from review")
        return self._apply(actor.staff_id, request, RequestAction.CLOSE,
                           closed_ms=self.clock())

    # --- reading --------------------------------------------------------------------------

    def due_notices(self, now: int | None = None) -> list[UserNotice]:
        """The user notices due at ``now`` (default: the clock), oldest first."""
        at = self.clock() if now is None else now
        return [UserNotice.of(r) for r in self.repository.notices_due(at)]

    def notices_for(self, account: str) -> list[UserNotice]:
        """``account``'s due notices (for ``GET /v1/account/status``; not audited: the user's
        own)."""
        now = self.clock()
        return [UserNotice.of(r) for r in self.repository.for_account(account)
                if r.notice_due_ms is not None and r.notice_due_ms <= now]

    def list_as(self, actor_id: str) -> list[LawfulRequest]:
        """Every request, oldest first; audited under ``actor_id`` (the CLI's operator)."""
        found = self.repository.all()
        self.audit.append(actor=actor_id, action=AuditAction.LAWFUL_LIST, target="lawful",
                          now_ms=self.clock(), details={"requests": len(found)})
        return found

    def show_as(self, actor_id: str, request_id: str) -> LawfulRequest:
        """One request; the view is audited under ``actor_id``. Raises `NotFoundError`."""
        request = self._load(request_id)
        self.audit.append(actor=actor_id, action=AuditAction.LAWFUL_VIEW,
                          target=f"lawful:{request_id}", now_ms=self.clock())
        return request

    def get(self, actor: Principal, request_id: str) -> LawfulRequest:
        """One request for legal (audited)."""
        self._require(actor)
        return self.show_as(actor.staff_id, request_id)
