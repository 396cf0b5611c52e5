"""Staff accounts, roles and permissions, queue membership, sign-in (Argon2id + TOTP), sessions.

Least privilege: each role gets only the permissions its job needs (`ROLE_PERMISSIONS`); an
admin manages accounts and keys but cannot read evidence or decide cases. The child-safety
permission belongs to no role: it is a per-person clearance (`StaffAccount.child_safety`), and
it is enforced *together with* queue membership:

- nobody without the clearance can be added to a child-safety queue
  (`ChildSafetyPermissionError`);
- revoking the clearance removes the person from every child-safety queue in the same step;
- `Principal.require_queue` (used for every case and evidence access) checks membership *and*
  the clearance, so even a stale membership row gives no access.

Sign-in: Argon2id password hashes (argon2-cffi, rehashed on login when the parameters change),
RFC 6238 TOTP (pyotp; 30 s steps, ±1 step of clock skew) where a code, once used, is refused
for the rest of its window (the last used step is stored), throttling per account and per
source with exponential lockout, and session tokens that are random, stored only as their
SHA-256 (a database leak yields no usable session), with an absolute and an idle expiry.
Every failure is the same `AuthenticationError` to the caller (no account enumeration, no
password oracle through distinct TOTP errors); the precise reason goes to the audit log.

Separation of duties (enrolment links instead of creator-known secrets, the two-person rule
for every role and the clearance, enrolment lineage against puppet accounts) is described in
`tidings.safety.staff_grants`, which holds that half of `StaffService`; the records live in
`tidings.safety.staff_model` and are re-exported here.

TOTP secrets are plain in `StaffAccount` (in memory); `tidings.safety.sql` encrypts them at
rest under the ``staff.key`` file key (AES-256-GCM bound to the staff id).

Time is passed in (``now_ms``); randomness is injectable (``token_source``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import pyotp

from tidings.crypto.primitives import constant_time_equal
from tidings.errors import (
    AuthenticationError,
    ChildSafetyPermissionError,
    ConflictError,
    LoginThrottledError,
    NotFoundError,
    PermissionDeniedError,
    SafetyInputError,
    SessionExpiredError,
)
from tidings.safety.audit import AuditAction, AuditLog
from tidings.safety.categories import DEFAULT_QUEUES, Queue
from tidings.safety.memory_rows import insert_new, replace_versioned
from tidings.safety.passwords import StaffPasswordHasher
from tidings.safety.staff_grants import TOTP_ISSUER, StaffGrants
from tidings.safety.staff_model import (
    ENROLMENT_TOKEN_BYTES,
    ENROLMENT_TTL_MS,
    GATED_ROLES,
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    ROLE_PERMISSIONS,
    EnrolmentToken,
    GrantKind,
    GrantStatus,
    IssuedEnrolment,
    Permission,
    Principal,
    Role,
    StaffAccount,
    StaffGrant,
    StaffSession,
    ThrottleRecord,
    TotpEnrolment,
    check_password,
    permissions_for,
    token_digest,
)

__all__ = [
    "ENROLMENT_TOKEN_BYTES",
    "ENROLMENT_TTL_MS",
    "GATED_ROLES",
    "LAST_SEEN_STEP_MS",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "ROLE_PERMISSIONS",
    "TOTP_ISSUER",
    "EnrolmentToken",
    "GrantKind",
    "GrantStatus",
    "InMemoryStaffRepository",
    "IssuedEnrolment",
    "LoginResult",
    "Permission",
    "Principal",
    "Role",
    "StaffAccount",
    "StaffGrant",
    "StaffRepository",
    "StaffService",
    "StaffSession",
    "ThrottlePolicy",
    "ThrottleRecord",
    "TotpEnrolment",
    "TotpVerifier",
    "permissions_for",
]


class StaffRepository(Protocol):
    """Storage for staff, queue membership, sessions and throttling.

    SQL: ``staff`` (unique ``username``), ``staff_queue(staff_id, queue_id)`` primary key on
    both, ``staff_session`` keyed by ``session_id``, ``login_throttle`` keyed by ``key``.
    """

    def add_staff(self, account: StaffAccount) -> None:
        """Raises `ConflictError` if the id or username exists."""
        ...

    def get_staff(self, staff_id: str) -> StaffAccount | None: ...

    def get_staff_by_username(self, username: str) -> StaffAccount | None: ...

    def count_staff(self) -> int: ...

    def update_staff(self, account: StaffAccount, expected_version: int) -> None:
        """Store ``account`` (whose version is ``expected_version + 1``) if the stored row still
        has ``expected_version``; else `ConflictError`."""
        ...

    def queues_of(self, staff_id: str) -> frozenset[str]: ...

    def add_queue_member(self, staff_id: str, queue_id: str) -> None: ...

    def remove_queue_member(self, staff_id: str, queue_id: str) -> None: ...

    def add_session(self, session: StaffSession) -> None: ...

    def get_session(self, session_id: str) -> StaffSession | None: ...

    def update_session(self, session: StaffSession) -> None: ...

    def delete_session(self, session_id: str) -> None: ...

    def delete_sessions_for(self, staff_id: str) -> None: ...

    def get_throttle(self, key: str) -> ThrottleRecord | None: ...

    def put_throttle(self, record: ThrottleRecord) -> None: ...

    def clear_throttle(self, key: str) -> None: ...

    def add_grant(self, grant: StaffGrant) -> None: ...

    def get_grant(self, grant_id: str) -> StaffGrant | None: ...

    def decide_grant(self, grant: StaffGrant) -> None:
        """Store a decided ``grant`` if the stored one is still pending; else `ConflictError`
        (so a grant is approved or rejected exactly once)."""
        ...

    def pending_grants(self) -> list[StaffGrant]:
        """Every pending grant, oldest first."""
        ...

    def replace_enrolment(self, token: EnrolmentToken) -> None:
        """Store ``token`` and delete every other enrolment token of its staff member."""
        ...

    def get_enrolment(self, token_hash: str) -> EnrolmentToken | None: ...

    def delete_enrolments_for(self, staff_id: str) -> None: ...


class InMemoryStaffRepository:
    """`StaffRepository` in memory."""

    def __init__(self) -> None:
        self._staff: dict[str, StaffAccount] = {}
        self._queues: set[tuple[str, str]] = set()
        self._sessions: dict[str, StaffSession] = {}
        self._throttle: dict[str, ThrottleRecord] = {}
        self._grants: dict[str, StaffGrant] = {}
        self._enrolments: dict[str, EnrolmentToken] = {}
        self._lock = threading.Lock()

    def add_staff(self, account: StaffAccount) -> None:
        with self._lock:
            if account.staff_id in self._staff or self.get_staff_by_username(account.username):
                raise ConflictError("staff account already exists")
            self._staff[account.staff_id] = account

    def get_staff(self, staff_id: str) -> StaffAccount | None:
        return self._staff.get(staff_id)

    def get_staff_by_username(self, username: str) -> StaffAccount | None:
        return next((a for a in self._staff.values() if a.username == username), None)

    def count_staff(self) -> int:
        return len(self._staff)

    def update_staff(self, account: StaffAccount, expected_version: int) -> None:
        with self._lock:
            replace_versioned(
                self._staff, account.staff_id, account, expected_version,
                conflict="staff account changed concurrently",
            )

    def queues_of(self, staff_id: str) -> frozenset[str]:
        return frozenset(q for s, q in self._queues if s == staff_id)

    def add_queue_member(self, staff_id: str, queue_id: str) -> None:
        self._queues.add((staff_id, queue_id))

    def remove_queue_member(self, staff_id: str, queue_id: str) -> None:
        self._queues.discard((staff_id, queue_id))

    def add_session(self, session: StaffSession) -> None:
        self._sessions[session.session_id] = session

    def get_session(self, session_id: str) -> StaffSession | None:
        return self._sessions.get(session_id)

    def update_session(self, session: StaffSession) -> None:
        if session.session_id in self._sessions:
            self._sessions[session.session_id] = session

    def delete_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def delete_sessions_for(self, staff_id: str) -> None:
        for sid in [s.session_id for s in self._sessions.values() if s.staff_id == staff_id]:
            del self._sessions[sid]

    def get_throttle(self, key: str) -> ThrottleRecord | None:
        return self._throttle.get(key)

    def put_throttle(self, record: ThrottleRecord) -> None:
        self._throttle[record.key] = record

    def clear_throttle(self, key: str) -> None:
        self._throttle.pop(key, None)

    def add_grant(self, grant: StaffGrant) -> None:
        with self._lock:
            insert_new(self._grants, grant.grant_id, grant, conflict="grant already exists")

    def get_grant(self, grant_id: str) -> StaffGrant | None:
        return self._grants.get(grant_id)

    def decide_grant(self, grant: StaffGrant) -> None:
        with self._lock:
            current = self._grants.get(grant.grant_id)
            if current is None or current.status is not GrantStatus.PENDING:
                raise ConflictError("this grant was already decided")
            self._grants[grant.grant_id] = grant

    def pending_grants(self) -> list[StaffGrant]:
        rows = [g for g in self._grants.values() if g.status is GrantStatus.PENDING]
        return sorted(rows, key=lambda g: (g.requested_ms, g.grant_id))

    def replace_enrolment(self, token: EnrolmentToken) -> None:
        with self._lock:
            self._drop_enrolments(token.staff_id)
            self._enrolments[token.token_hash] = token

    def get_enrolment(self, token_hash: str) -> EnrolmentToken | None:
        return self._enrolments.get(token_hash)

    def delete_enrolments_for(self, staff_id: str) -> None:
        with self._lock:
            self._drop_enrolments(staff_id)

    def _drop_enrolments(self, staff_id: str) -> None:
        for key in [k for k, t in self._enrolments.items() if t.staff_id == staff_id]:
            del self._enrolments[key]


# --- TOTP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotpVerifier:
    """RFC 6238 verification with replay protection.

    `match` returns the time step a code is valid for (within ``window`` steps of now), or None.
    A caller accepts it only if the step is greater than the last accepted step, so a code
    cannot be used twice, nor can an older code be used after a newer one.
    """

    interval_s: int = 30
    digits: int = 6
    window: int = 1

    def step(self, now_ms: int) -> int:
        return now_ms // 1000 // self.interval_s

    def code_at(self, secret: str, step: int) -> str:
        return pyotp.TOTP(secret, digits=self.digits, interval=self.interval_s).generate_otp(step)

    def match(self, secret: str, code: str, now_ms: int) -> int | None:
        if not isinstance(code, str) or len(code) != self.digits or not code.isdigit():
            return None
        now_step = self.step(now_ms)
        found: int | None = None
        # Check every step in the window (no early exit) so timing does not reveal which step.
        for step in range(now_step - self.window, now_step + self.window + 1):
            if constant_time_equal(self.code_at(secret, step).encode(), code.encode()):
                found = step if found is None else max(found, step)
        return found


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """``max_failures`` within ``window_ms`` locks the key for ``lockout_ms``, doubling with
    each further failure up to ``max_lockout_ms``."""

    max_failures: int = 5
    window_ms: int = 15 * 60_000
    lockout_ms: int = 60_000
    max_lockout_ms: int = 60 * 60_000


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful sign-in. ``token`` is shown to the client once (cookie) and never stored."""

    token: str = field(repr=False)
    session: StaffSession
    principal: Principal


def _default_token_source(n: int) -> bytes:
    return secrets.token_bytes(n)


_session_id = token_digest

LAST_SEEN_STEP_MS = 60_000
"""How far a session's stored last-seen time may lag before `StaffService.authenticate`
writes it again (capped at a quarter of the idle timeout): the granularity of the idle
expiry, traded for no write on most requests."""


def _check_username(username: str) -> None:
    if (
        not isinstance(username, str)
        or not 1 <= len(username) <= 64
        or not all(c.isalnum() or c in "._-" for c in username)
    ):
        raise SafetyInputError("username must be 1-64 letters, digits, '.', '_' or '-'")


class StaffService(StaffGrants):
    """Staff management and sign-in over a `StaffRepository`; every change is audited.

    ``hasher`` defaults to `StaffPasswordHasher` (argon2-cffi's Argon2id defaults, RFC 9106
    low-memory profile); tests pass a cheap one. ``token_source(n)`` returns n random bytes;
    ``id_source()`` new ids.
    """

    def __init__(
        self,
        repository: StaffRepository,
        audit: AuditLog,
        *,
        queues: Mapping[str, Queue] = DEFAULT_QUEUES,
        hasher: StaffPasswordHasher | None = None,
        totp: TotpVerifier | None = None,
        throttle: ThrottlePolicy | None = None,
        session_ttl_ms: int = 8 * 3600_000,
        idle_ttl_ms: int = 30 * 60_000,
        token_source: Callable[[int], bytes] = _default_token_source,
        id_source: Callable[[], str] | None = None,
    ) -> None:
        self._repo = repository
        self._audit = audit
        self._queues = queues
        self._hasher = hasher or StaffPasswordHasher()
        self._totp = totp or TotpVerifier()
        self._throttle = throttle or ThrottlePolicy()
        self._session_ttl_ms = session_ttl_ms
        self._idle_ttl_ms = idle_ttl_ms
        self._touch_interval_ms = min(LAST_SEEN_STEP_MS, idle_ttl_ms // 4)
        self._token_source = token_source
        self._id_source = id_source or (lambda: "staff_" + token_source(12).hex())
        # Verified against for unknown usernames so that the response time does not reveal
        # whether an account exists.
        self._dummy_hash = self._hasher.hash("not-a-real-password-" + token_source(8).hex())

    # --- lookups ------------------------------------------------------------------------------

    def _get(self, staff_id: str) -> StaffAccount:
        account = self._repo.get_staff(staff_id)
        if account is None:
            raise NotFoundError("no such staff account")
        return account

    def principal_for(self, staff_id: str) -> Principal:
        """The current `Principal` of a staff account (roles, clearance, queues as stored).

        Raises:
            NotFoundError: unknown id.  AuthenticationError: the account is disabled.
        """
        account = self._get(staff_id)
        if account.disabled:
            raise AuthenticationError()
        return Principal(
            staff_id=account.staff_id,
            username=account.username,
            roles=account.roles,
            permissions=permissions_for(account.roles, child_safety=account.child_safety),
            queues=self._repo.queues_of(account.staff_id),
        )

    def queue(self, queue_id: str) -> Queue:
        try:
            return self._queues[queue_id]
        except KeyError:
            raise NotFoundError("no such queue") from None

    # --- account management -------------------------------------------------------------------

    def _new_account(
        self,
        username: str,
        display_name: str,
        roles: Iterable[Role],
        now_ms: int,
        *,
        password: str | None = None,
    ) -> tuple[StaffAccount, frozenset[Role]]:
        """A new account row and the roles asked for it. With ``password`` (the bootstrap admin
        only) the account is complete; without, it has no secrets and awaits enrolment."""
        _check_username(username)
        if password is not None:
            check_password(password)
        role_set = frozenset(Role(r) for r in roles)
        if not role_set:
            raise SafetyInputError("a staff account needs at least one role")
        account = StaffAccount(
            staff_id=self._id_source(),
            username=username,
            display_name=display_name[:128],
            roles=role_set if password is not None else frozenset(),
            child_safety=False,
            password_hash=self._hasher.hash(password) if password is not None else "",
            totp_secret=pyotp.random_base32() if password is not None else "",
            totp_last_step=-1,
            disabled=False,
            created_ms=now_ms,
            enrolled_ms=now_ms if password is not None else None,
        )
        return account, role_set

    def bootstrap_admin(self, username: str, password: str, *, now_ms: int) -> StaffAccount:
        """Create the first admin, complete with password and TOTP secret (the one account whose
        secrets its creator, the operator, knows); allowed only while there are no staff.

        Returns the account; its ``totp_secret`` must reach the operator once, privately
        (`provisioning_uri`), never a log.

        Raises:
            ConflictError: staff already exist.  SafetyInputError: bad username or password.
        """
        if self._repo.count_staff() > 0:
            raise ConflictError("staff accounts already exist")
        account, _ = self._new_account(username, username, [Role.ADMIN], now_ms, password=password)
        self._repo.add_staff(account)
        self._audit_on(
            "system", AuditAction.STAFF_CREATE, account.staff_id, now_ms,
            details={"username": username, "roles": [Role.ADMIN.value], "bootstrap": True},
        )
        return account

    def create_staff(
        self,
        actor: Principal,
        *,
        username: str,
        display_name: str,
        roles: Iterable[Role],
        now_ms: int,
        child_safety: bool = False,
    ) -> IssuedEnrolment:
        """Create a staff account with no password, no TOTP secret and no effective role: each
        requested role (and the clearance, with ``child_safety``) becomes a pending grant, and
        the returned enrolment token is for the owner (`begin_enrolment`).

        Raises:
            PermissionDeniedError: actor lacks MANAGE_STAFF.
            ConflictError: the username exists.  SafetyInputError: bad input.
        """
        actor.require(Permission.MANAGE_STAFF)
        account, wanted = self._new_account(username, display_name, roles, now_ms)
        self._repo.add_staff(account)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_CREATE, account.staff_id, now_ms,
            details={"username": username, "requested_roles": sorted(r.value for r in wanted)},
        )
        grants = [self._request(actor, account, GrantKind.ROLE, r, now_ms) for r in sorted(wanted)]
        if child_safety:
            grants.append(self._request(actor, account, GrantKind.CHILD_SAFETY, None, now_ms))
        issued = self._issue_enrolment(actor, account, now_ms)
        return replace(issued, pending_grants=tuple(g for g in grants if g is not None))

    def _update(self, account: StaffAccount, **changes: object) -> StaffAccount:
        updated = replace(account, version=account.version + 1, **changes)  # type: ignore[arg-type]
        self._repo.update_staff(updated, account.version)
        return updated

    def _not_self(self, actor: Principal, staff_id: str) -> None:
        # No one changes their own privileges: an admin cannot grant themselves the
        # child-safety clearance or a reviewing role to reach evidence.
        if actor.staff_id == staff_id:
            raise PermissionDeniedError("staff cannot change their own privileges")

    def set_roles(
        self, actor: Principal, staff_id: str, roles: Iterable[Role], *, now_ms: int
    ) -> StaffAccount:
        """Make ``roles`` the staff member's roles: roles dropped are removed at once (with the
        queue memberships the remaining roles cannot use, and pending grants of roles no longer
        wanted); roles added become pending grants (`approve_grant`).

        Raises:
            PermissionDeniedError: no MANAGE_STAFF, or the actor is the target.
            NotFoundError, SafetyInputError (no roles), ConflictError (concurrent change).
        """
        actor.require(Permission.MANAGE_STAFF)
        self._not_self(actor, staff_id)
        role_set = frozenset(Role(r) for r in roles)
        if not role_set:
            raise SafetyInputError("a staff account needs at least one role")
        account = self._get(staff_id)
        self._withdraw(actor, staff_id, lambda g: g.role is None or g.role in role_set, now_ms)
        kept = account.roles & role_set
        if kept != account.roles:
            before = sorted(r.value for r in account.roles)
            account = self._update(account, roles=kept)
            self._audit_on(
                actor.staff_id, AuditAction.STAFF_ROLES, staff_id, now_ms,
                details={"before": before, "after": sorted(r.value for r in kept)},
            )
        for role in sorted(role_set - account.roles):
            self._request(actor, account, GrantKind.ROLE, role, now_ms)
        if not self._may_review(staff_id):
            for queue_id in self._repo.queues_of(staff_id):
                self._repo.remove_queue_member(staff_id, queue_id)
        return account

    def set_child_safety(
        self, actor: Principal, staff_id: str, granted: bool, *, now_ms: int
    ) -> StaffAccount:
        """Request (``granted``: a pending grant, `approve_grant`) or revoke the child-safety
        clearance. Revoking is immediate and removes every child-safety queue membership in the
        same step (membership and clearance are enforced together).

        Raises:
            PermissionDeniedError: no MANAGE_STAFF, or the actor is the target.
            NotFoundError, ConflictError.
        """
        actor.require(Permission.MANAGE_STAFF)
        self._not_self(actor, staff_id)
        account = self._get(staff_id)
        if granted:
            self._request(actor, account, GrantKind.CHILD_SAFETY, None, now_ms)
            return account
        self._withdraw(actor, staff_id, lambda g: g.kind is not GrantKind.CHILD_SAFETY, now_ms)
        account = self._update(account, child_safety=False)
        removed: list[str] = []
        for queue_id in sorted(self._repo.queues_of(staff_id)):
            queue = self._queues.get(queue_id)
            if queue is None or queue.child_safety:
                self._repo.remove_queue_member(staff_id, queue_id)
                removed.append(queue_id)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_CHILD_SAFETY, staff_id, now_ms,
            details={"granted": False, "removed_queues": removed},
        )
        return account

    def add_to_queue(self, actor: Principal, staff_id: str, queue_id: str, *, now_ms: int) -> None:
        """Make a staff member a member of a queue. A reviewing role still pending approval
        suffices (membership alone opens nothing); a child-safety queue needs the clearance
        granted, not pending.

        Raises:
            PermissionDeniedError: actor lacks MANAGE_QUEUES; the target's roles (held or
                pending) cannot view queues.
            ChildSafetyPermissionError: a child-safety queue and the target is not cleared.
            NotFoundError: unknown staff or queue.
        """
        actor.require(Permission.MANAGE_QUEUES)
        queue = self.queue(queue_id)
        account = self._get(staff_id)
        if not self._may_review(staff_id):
            raise PermissionDeniedError("this staff member's roles do not review queues")
        if queue.child_safety and not account.child_safety:
            raise ChildSafetyPermissionError()
        self._repo.add_queue_member(staff_id, queue_id)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_QUEUE, staff_id, now_ms,
            details={"queue": queue_id, "member": True},
        )

    def remove_from_queue(
        self, actor: Principal, staff_id: str, queue_id: str, *, now_ms: int
    ) -> None:
        """Raises `PermissionDeniedError` without MANAGE_QUEUES."""
        actor.require(Permission.MANAGE_QUEUES)
        self._repo.remove_queue_member(staff_id, queue_id)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_QUEUE, staff_id, now_ms,
            details={"queue": queue_id, "member": False},
        )

    def disable(self, actor: Principal, staff_id: str, *, now_ms: int) -> None:
        """Disable an account, end all its sessions and void its enrolment link at once.

        Raises:
            PermissionDeniedError: no MANAGE_STAFF, or the actor is the target.  NotFoundError.
        """
        actor.require(Permission.MANAGE_STAFF)
        self._not_self(actor, staff_id)
        self._update(self._get(staff_id), disabled=True)
        self._repo.delete_sessions_for(staff_id)
        self._repo.delete_enrolments_for(staff_id)
        self._audit_on(actor.staff_id, AuditAction.STAFF_DISABLE, staff_id, now_ms)

    # --- sign-in ------------------------------------------------------------------------------

    def _throttled_until(self, key: str, now_ms: int) -> int:
        record = self._repo.get_throttle(key)
        return record.locked_until_ms if record and record.locked_until_ms > now_ms else 0

    def _record_failure(self, key: str, now_ms: int) -> None:
        policy = self._throttle
        record = self._repo.get_throttle(key)
        if record is None or now_ms - record.first_failure_ms > policy.window_ms:
            record = ThrottleRecord(key, 0, now_ms, 0)
        failures = record.failures + 1
        locked_until = record.locked_until_ms
        if failures >= policy.max_failures:
            exponent = min(failures - policy.max_failures, 30)
            lock = min(policy.lockout_ms * (2**exponent), policy.max_lockout_ms)
            locked_until = now_ms + lock
        self._repo.put_throttle(
            ThrottleRecord(key, failures, record.first_failure_ms, locked_until)
        )

    def _fail(
        self, keys: list[str], username: str, reason: str, now_ms: int
    ) -> AuthenticationError:
        for key in keys:
            self._record_failure(key, now_ms)
        self._audit.append(
            actor="anonymous",
            action=AuditAction.LOGIN_FAILED,
            target=f"username:{username[:64]}",
            now_ms=now_ms,
            details={"reason": reason},
        )
        return AuthenticationError()

    def login(
        self, username: str, password: str, totp_code: str, *, now_ms: int, source: str = ""
    ) -> LoginResult:
        """Sign in with password and TOTP code; returns a new session token.

        Raises:
            LoginThrottledError: the account or the source is locked out (message has the
                wait in seconds); nothing is checked.
            AuthenticationError: anything else wrong (same error and message for every cause).
        """
        keys = [f"account:{username[:64]}"] + ([f"source:{source[:64]}"] if source else [])
        until = max(self._throttled_until(k, now_ms) for k in keys)
        if until:
            seconds = -(-(until - now_ms) // 1000)
            raise LoginThrottledError(
                f"too many failed sign-ins; retry in {seconds} s", retry_after_s=seconds
            )
        account = self._repo.get_staff_by_username(username) if isinstance(username, str) else None
        if account is None or account.disabled or not account.enrolled:
            self._hasher.verify(self._dummy_hash, password)
            reason = "not_enrolled" if account and not account.disabled else "unknown_or_disabled"
            raise self._fail(keys, str(username), reason, now_ms)
        if not self._hasher.verify(account.password_hash, password):
            raise self._fail(keys, username, "bad_password", now_ms)
        step = self._totp.match(account.totp_secret, totp_code, now_ms)
        if step is None:
            raise self._fail(keys, username, "bad_totp", now_ms)
        if step <= account.totp_last_step:
            raise self._fail(keys, username, "totp_replayed", now_ms)
        changes: dict[str, object] = {"totp_last_step": step}
        if self._hasher.needs_rehash(account.password_hash):
            changes["password_hash"] = self._hasher.hash(password)
        account = self._update(account, **changes)
        for key in keys:
            self._repo.clear_throttle(key)
        token = self._token_source(32).hex()
        session = StaffSession(
            session_id=_session_id(token),
            staff_id=account.staff_id,
            created_ms=now_ms,
            expires_ms=now_ms + self._session_ttl_ms,
            last_seen_ms=now_ms,
        )
        self._repo.add_session(session)
        self._audit.append(
            actor=account.staff_id,
            action=AuditAction.LOGIN,
            target=f"staff:{account.staff_id}",
            now_ms=now_ms,
            details={"session": session.session_id[:16]},
        )
        return LoginResult(
            token=token, session=session, principal=self.principal_for(account.staff_id)
        )

    def authenticate(self, token: str, *, now_ms: int) -> Principal:
        """The principal for a session token; slides the idle expiry, in steps.

        The stored ``last_seen_ms`` is written only once it lags ``now_ms`` by at least the
        touch interval (`LAST_SEEN_STEP_MS`, at most a quarter of the idle timeout), so a
        stream of page views costs one session write per interval instead of one per request.
        The idle timeout is measured from the stored value: a session expires at most one
        touch interval *earlier* than an exact per-request slide would let it, never later.

        Raises:
            SessionExpiredError: past the absolute or idle expiry (the session is deleted).
            AuthenticationError: unknown token, or the account is disabled.
        """
        if not isinstance(token, str) or not token:
            raise AuthenticationError()
        session = self._repo.get_session(_session_id(token))
        if session is None:
            raise AuthenticationError()
        if now_ms >= session.expires_ms or now_ms - session.last_seen_ms >= self._idle_ttl_ms:
            self._repo.delete_session(session.session_id)
            raise SessionExpiredError()
        principal = self.principal_for(session.staff_id)
        if now_ms - session.last_seen_ms >= self._touch_interval_ms:
            self._repo.update_session(replace(session, last_seen_ms=now_ms))
        return principal

    def session_remaining_ms(self, token: str, *, now_ms: int) -> int:
        """Time until the session expires (absolute or idle, whichever is first); 0 if gone."""
        session = self._repo.get_session(_session_id(token))
        if session is None:
            return 0
        return max(0, min(session.expires_ms, session.last_seen_ms + self._idle_ttl_ms) - now_ms)

    def logout(self, token: str, *, now_ms: int) -> None:
        """End a session (no error if it is already gone)."""
        session = self._repo.get_session(_session_id(token))
        if session is None:
            return
        self._repo.delete_session(session.session_id)
        self._audit.append(
            actor=session.staff_id,
            action=AuditAction.LOGOUT,
            target=f"staff:{session.staff_id}",
            now_ms=now_ms,
        )
