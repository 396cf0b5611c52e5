"""The staff role model and records of `tidings.safety.staff`: roles and their permissions,
staff accounts, sessions, throttle records, privilege grants and enrolment links, and the
`Principal` every safety operation receives. Pure data (no storage, no I/O); `tidings.safety.staff`
re-exports every name, so import from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tidings.crypto.primitives import sha256
from tidings.errors import ChildSafetyPermissionError, PermissionDeniedError, SafetyInputError
from tidings.safety.categories import Queue

__all__ = [
    "ENROLMENT_TOKEN_BYTES",
    "ENROLMENT_TTL_MS",
    "GATED_ROLES",
    "MAX_LINEAGE",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "ROLE_PERMISSIONS",
    "EnrolmentToken",
    "GrantKind",
    "GrantStatus",
    "IssuedEnrolment",
    "Permission",
    "Principal",
    "Role",
    "StaffAccount",
    "StaffGrant",
    "StaffSession",
    "ThrottleRecord",
    "TotpEnrolment",
    "check_password",
    "permissions_for",
    "token_digest",
]


class Role(StrEnum):
    REVIEWER = "reviewer"
    LEAD = "lead"
    LEGAL = "legal"
    ADMIN = "admin"


class Permission(StrEnum):
    VIEW_QUEUE = "view_queue"
    CLAIM_CASE = "claim_case"
    VIEW_EVIDENCE = "view_evidence"
    ADD_NOTE = "add_note"
    DECIDE = "decide"
    ESCALATE = "escalate"
    CONFIRM_DECISION = "confirm_decision"  # second reviewer
    DECIDE_APPEAL = "decide_appeal"
    ASSIGN_CASE = "assign_case"
    BREAK_LOCK = "break_lock"
    VOID_REPORTER = "void_reporter"
    MANAGE_QUEUES = "manage_queues"
    EXPORT_EVIDENCE = "export_evidence"
    MAKE_REFERRAL = "make_referral"  # prepare, submit, retract, reopen a CyberTipline referral
    APPROVE_REFERRAL = "approve_referral"  # see and approve referrals (the second person)
    VIEW_AUDIT = "view_audit"
    MANAGE_STAFF = "manage_staff"
    ROTATE_KEYS = "rotate_keys"
    VIEW_BANKS = "view_banks"  # hash banks, their entries and sources
    MANAGE_BANKS = "manage_banks"  # create banks, import and remove entries
    VIEW_INVENTORY = "view_inventory"  # the data inventory lawful requests are scoped against
    VIEW_TRANSPARENCY = "view_transparency"  # the transparency report (aggregate counts)
    MANAGE_HOLDS = "manage_holds"  # place, extend, release preservation holds (legal)
    HANDLE_LAWFUL_REQUESTS = "handle_lawful_requests"  # intake, scope, produce (legal)
    CHILD_SAFETY = "child_safety"  # never from a role: StaffAccount.child_safety


_REVIEWER = frozenset(
    {
        Permission.VIEW_QUEUE,
        Permission.CLAIM_CASE,
        Permission.VIEW_EVIDENCE,
        Permission.ADD_NOTE,
        Permission.DECIDE,
        Permission.ESCALATE,
        Permission.DECIDE_APPEAL,
    }
)

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.REVIEWER: _REVIEWER,
    Role.LEAD: _REVIEWER
    | {
        Permission.CONFIRM_DECISION,
        Permission.APPROVE_REFERRAL,
        Permission.ASSIGN_CASE,
        Permission.BREAK_LOCK,
        Permission.VOID_REPORTER,
        Permission.MANAGE_QUEUES,
        Permission.VIEW_AUDIT,
    },
    # Legal works referrals and lawful requests: sees evidence and exports it, does not decide
    # moderation cases.
    Role.LEGAL: frozenset(
        {
            Permission.VIEW_QUEUE,
            Permission.CLAIM_CASE,
            Permission.VIEW_EVIDENCE,
            Permission.ADD_NOTE,
            Permission.EXPORT_EVIDENCE,
            Permission.MAKE_REFERRAL,
            Permission.APPROVE_REFERRAL,
            Permission.VIEW_AUDIT,
            Permission.VIEW_BANKS,
            Permission.VIEW_INVENTORY,
            Permission.VIEW_TRANSPARENCY,
            Permission.MANAGE_HOLDS,
            Permission.HANDLE_LAWFUL_REQUESTS,
        }
    ),
    # Admin runs the console, not the moderation: no evidence, no decisions. It keeps the
    # hash banks (their entries are hashes supplied by outside organisations, not evidence).
    # Legal and admin see the transparency report before it is published (legal signs off
    # what is published, admin publishes it): counts only, but operational volumes.
    Role.ADMIN: frozenset(
        {
            Permission.MANAGE_STAFF,
            Permission.MANAGE_QUEUES,
            Permission.VIEW_AUDIT,
            Permission.ROTATE_KEYS,
            Permission.VIEW_BANKS,
            Permission.MANAGE_BANKS,
            Permission.VIEW_INVENTORY,
            Permission.VIEW_TRANSPARENCY,
        }
    ),
}


def permissions_for(roles: Iterable[Role], *, child_safety: bool) -> frozenset[Permission]:
    """Union of the roles' permissions, plus CHILD_SAFETY when cleared and the roles can see
    queues at all (an admin with the flag still gets no evidence access)."""
    perms: frozenset[Permission] = frozenset().union(*(ROLE_PERMISSIONS[r] for r in roles))
    if child_safety and Permission.VIEW_QUEUE in perms:
        perms |= {Permission.CHILD_SAFETY}
    return perms


GATED_ROLES: frozenset[Role] = frozenset({Role.REVIEWER, Role.LEAD, Role.LEGAL, Role.ADMIN})
"""Roles granted only with a second admin's approval (every role: three see evidence, and an
admin could otherwise mint a second admin to approve with)."""

ENROLMENT_TTL_MS = 72 * 3600_000
"""How long an enrolment link stays valid."""
ENROLMENT_TOKEN_BYTES = 32  # 256 bits
MAX_LINEAGE = 64  # sponsor chain walked at most this deep (a chain never loops; belt and braces)


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaffAccount:
    """A staff member (a row). Secrets are hidden from the repr.

    ``totp_last_step`` is the last TOTP time step accepted (replay protection); ``version`` is
    for optimistic concurrency (`StaffRepository.update_staff`).
    """

    staff_id: str
    username: str
    display_name: str
    roles: frozenset[Role]
    child_safety: bool
    password_hash: str = field(repr=False)
    totp_secret: str = field(repr=False)
    totp_last_step: int
    disabled: bool
    created_ms: int
    version: int = 0
    enrolled_ms: int | None = None  # None: enrolment not finished, cannot sign in
    sponsor: str = ""  # who issued the enrolment link used ("" for the bootstrap admin)

    @property
    def enrolled(self) -> bool:
        return self.enrolled_ms is not None


class GrantKind(StrEnum):
    ROLE = "role"
    CHILD_SAFETY = "child_safety"


class GrantStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # superseded by a role change or a revocation


@dataclass(frozen=True, slots=True)
class StaffGrant:
    """A requested privilege (a role, or the child-safety clearance); no effect until approved.
    ``role`` is set for ROLE grants only."""

    grant_id: str
    staff_id: str
    kind: GrantKind
    role: Role | None
    requested_by: str
    requested_ms: int
    status: GrantStatus = GrantStatus.PENDING
    decided_by: str = ""
    decided_ms: int = 0

    @property
    def label(self) -> str:
        return self.role.value if self.role is not None else "child-safety clearance"


@dataclass(frozen=True, slots=True)
class EnrolmentToken:
    """A stored enrolment link: ``token_hash`` is SHA-256(token) in hex, never the token."""

    token_hash: str
    staff_id: str
    issued_by: str
    created_ms: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class IssuedEnrolment:
    """A created (or re-linked) account and its enrolment token, shown once to the creator."""

    account: StaffAccount
    token: str = field(repr=False)
    expires_ms: int
    pending_grants: tuple[StaffGrant, ...] = ()

    def url(self, console_base: str) -> str:
        """The link to hand to the owner: ``<console>/enrol/<token>``."""
        return f"{console_base.rstrip('/')}/enrol/{self.token}"


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """The TOTP secret drawn for an enrolling owner (shown to them only, until confirmed)."""

    username: str
    secret: str = field(repr=False)
    uri: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StaffSession:
    """A session row; ``session_id`` is SHA-256(token) in hex, never the token itself."""

    session_id: str
    staff_id: str
    created_ms: int
    expires_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class ThrottleRecord:
    """Failed sign-ins for one key (``"account:<name>"`` or ``"source:<addr>"``)."""

    key: str
    failures: int
    first_failure_ms: int
    locked_until_ms: int


# --- principal ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated staff member, as every safety operation receives it.

    Built fresh from the stored account for each request (`StaffService.authenticate`), so a
    role change or a revoked clearance takes effect on the next request.
    """

    staff_id: str
    username: str
    roles: frozenset[Role]
    permissions: frozenset[Permission]
    queues: frozenset[str]

    def has(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        """Raises `PermissionDeniedError` (`ChildSafetyPermissionError` for CHILD_SAFETY)."""
        if permission not in self.permissions:
            if permission is Permission.CHILD_SAFETY:
                raise ChildSafetyPermissionError()
            raise PermissionDeniedError(f"this action requires the {permission.value} permission")

    def can_access_queue(self, queue: Queue) -> bool:
        return queue.queue_id in self.queues and (
            not queue.child_safety or Permission.CHILD_SAFETY in self.permissions
        )

    def require_queue(self, queue: Queue) -> None:
        """Membership of ``queue`` and, for a child-safety queue, the clearance — together.

        Raises:
            ChildSafetyPermissionError: a child-safety queue and no clearance.
            PermissionDeniedError: not a member of the queue.
        """
        if queue.child_safety and Permission.CHILD_SAFETY not in self.permissions:
            raise ChildSafetyPermissionError()
        if queue.queue_id not in self.queues:
            raise PermissionDeniedError("not a member of this queue")


MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256


def check_password(password: str) -> None:
    """The password policy. Raises `SafetyInputError`."""
    if not isinstance(password, str) or not MIN_PASSWORD_CHARS <= len(password) <= (
        MAX_PASSWORD_CHARS
    ):
        raise SafetyInputError(
            f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )


def token_digest(token: str) -> str:
    """SHA-256 of a session or enrolment token, in hex: what is stored instead of it."""
    return sha256(token.encode("utf-8")).hex()
